"""Pretrained weights: read, convert and write every ViT checkpoint family.

Loading is a pipeline of small steps: ``read_checkpoint`` (safe readers, no pickle) -> ``detect_format``
-> ``Family.convert`` (a key-mapping table to vitkit names) -> ``adapt`` (heads, position grid, input
channels, patch size) -> a strict load with a ``LoadReport``. Families: vitkit, timm, hf (transformers),
npz (Google vision_transformer / big_vision).

This floor sits above ``model`` and below ``registry``: what it needs to know of registered models (head
counts of a width, a timm folder's named architecture) comes in as the ``known`` argument.
"""

from __future__ import annotations

from .families import FORMATS, detect_format, families, get_family
from .formats import Converted, Family
from .infer import infer_config, match_known
from .inventory import Inventory, inventory
from .io import Checkpoint, read_checkpoint
from .load import LoadReport, from_checkpoint, load_converted, load_pretrained
from .save import Conversion, Lost, convert, save_pretrained

__all__ = [
    "FORMATS", "Checkpoint", "Conversion", "Converted", "Family", "Inventory", "LoadReport", "Lost", "convert",
    "detect_format", "families", "from_checkpoint", "get_family", "infer_config", "inventory", "load_converted",
    "load_pretrained", "match_known", "read_checkpoint", "save_pretrained",
]
