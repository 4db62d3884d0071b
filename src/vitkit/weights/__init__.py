"""Pretrained weights: read, convert and write every ViT checkpoint family.

Loading is a pipeline of small steps: ``read_checkpoint`` (safe readers, no pickle) -> ``detect_format``
-> ``Family.convert`` (a key-mapping table to vitkit names) -> ``fit`` (``adapt``: heads, position grid, input
channels, patch size; then a strict comparison recorded in a ``LoadReport``) -> ``build``, the one builder of
vitkit models (fresh or with fitted weights; it sets ``pretrained_cfg``, ``model_name`` and ``load_report``).
Families: vitkit, timm, hf (transformers), npz (Google vision_transformer / big_vision).

This floor sits above ``model`` and below ``registry``: what it needs to know of registered models (head
counts of a width, a timm folder's named architecture) comes in as the ``known`` argument.
"""

from __future__ import annotations

from .families import FORMATS, detect_format, families, get_family
from .formats import Converted, Family
from .infer import infer_config, match_known
from .inventory import Inventory, inventory
from .load import Fitted, LoadReport, build, fit, from_checkpoint, load_pretrained, with_patch_size
from .readers import Checkpoint, read_checkpoint
from .save import Conversion, Lost, convert, save_pretrained

__all__ = [
    "FORMATS", "Checkpoint", "Conversion", "Converted", "Family", "Fitted", "Inventory", "LoadReport", "Lost", "build",
    "convert", "detect_format", "families", "fit", "from_checkpoint", "get_family", "infer_config", "inventory",
    "load_pretrained", "match_known", "read_checkpoint", "save_pretrained", "with_patch_size",
]
