"""Test-only access to the reference libraries (timm, transformers).

torchvision 0.28.0 is a CUDA build; on CPU torch its import fails with "operator torchvision::nms does not
exist", and timm imports torchvision. ``vitkit.bench.import_peer`` (which ``vitkit bench`` uses for the same
peers) registers placeholder schemas for the two ops torchvision's import checks, only when the import
fails. The library itself never imports torchvision or timm at module level.
"""

from __future__ import annotations

from vitkit.bench import import_peer


def _require(name: str):  # noqa: ANN202 (a module)
    module = import_peer(name)
    assert module is not None, f"{name} is a test dependency (pip install -e '.[test]')"
    return module


def import_timm():
    return _require("timm")


def import_transformers():
    return _require("transformers")
