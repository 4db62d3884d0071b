"""Test-only access to the reference libraries (timm, transformers, open_clip).

They are test dependencies: a missing or broken one is a failure, not a skip. torchvision (which timm and
open_clip import) imports on CPU torch in the project's .venv through the start-up hook that
``scripts/setup.sh`` installs (``scripts/env/torchvision_cpu.py``). The library itself never imports
torchvision, timm or open_clip.
"""

from __future__ import annotations

import importlib


def require(name: str):  # noqa: ANN201 (a module)
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise AssertionError(f"{name} is a test dependency (bash scripts/setup.sh installs it): {exc}") from exc


def import_timm():
    return require("timm")


def import_transformers():
    return require("transformers")
