"""Pretrained weights: read, convert and write every ViT checkpoint family.

Loading is a pipeline of small steps: ``read_checkpoint`` (safe readers, no pickle) -> ``detect_format``
-> ``Family.convert`` (a key-mapping table to vitkit names) -> ``adapt`` (heads, position grid, input
channels, patch size) -> a strict load with a ``LoadReport``. Families: vitkit, timm, hf (transformers),
npz (Google vision_transformer / big_vision).

Names are imported on first use: ``vitkit.model`` imports ``weights.posemb``, and the loaders import
the model, so an eager import here would be circular.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "FORMATS": "formats", "Converted": "formats", "Family": "formats", "detect_format": "formats",
    "families": "formats", "get_family": "formats",
    "infer_config": "infer", "match_registry": "infer",
    "Inventory": "summary", "inventory": "summary",
    "Checkpoint": "io", "read_checkpoint": "io",
    "LoadReport": "load", "from_pretrained": "load", "load_converted": "load", "load_pretrained": "load",
    "resample_patch_embed": "posemb", "resample_posemb": "posemb",
    "save_pretrained": "save", "convert": "save", "Conversion": "save", "max_output_difference": "save",
}
__all__ = [
    "FORMATS", "Checkpoint", "Conversion", "Converted", "Family", "Inventory", "LoadReport", "convert",
    "detect_format", "families", "from_pretrained", "get_family", "infer_config", "inventory", "load_converted",
    "load_pretrained", "match_registry", "max_output_difference", "read_checkpoint", "resample_patch_embed",
    "resample_posemb", "save_pretrained",
]

if TYPE_CHECKING:
    from .formats import FORMATS, Converted, Family, detect_format, families, get_family
    from .infer import infer_config, match_registry
    from .io import Checkpoint, read_checkpoint
    from .load import LoadReport, from_pretrained, load_converted, load_pretrained
    from .posemb import resample_patch_embed, resample_posemb
    from .save import Conversion, convert, max_output_difference, save_pretrained
    from .summary import Inventory, inventory


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
