"""Test-only access to the reference libraries (timm, transformers).

torchvision 0.28.0 is a CUDA build; on CPU torch its import fails with
"operator torchvision::nms does not exist". timm imports torchvision, so before importing timm we
register placeholder schemas for the two ops torchvision's import checks, only when the import fails.
The library itself never imports torchvision or timm.
"""

from __future__ import annotations

import sys

import torch

_PATCHED = False


def _patch_torchvision() -> None:
    global _PATCHED
    if _PATCHED:
        return
    try:
        import torchvision  # noqa: F401
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        lib = torch.library.Library("torchvision", "FRAGMENT")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold, float scale, int zero_point) -> Tensor")
        _patch_torchvision.lib = lib  # keep the fragment alive
    _PATCHED = True


def import_timm():
    _patch_torchvision()
    import timm

    return timm


def import_transformers():
    _patch_torchvision()
    import transformers

    return transformers
