"""vitkit: Vision Transformers on PyTorch."""

from __future__ import annotations

from .config import ViTConfig
from .errors import (
    CheckpointError,
    ConfigError,
    DataError,
    ImageError,
    InputSizeError,
    UnknownModelError,
    VitkitError,
)
from .model import VisionTransformer
from .registry import ModelEntry, PretrainedCfg, create_model, get_entry, list_models, register
from .weights.load import from_pretrained
from .weights.save import save_pretrained

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "ConfigError", "DataError", "ImageError", "InputSizeError", "ModelEntry",
    "PretrainedCfg", "UnknownModelError", "ViTConfig", "VisionTransformer", "VitkitError", "__version__",
    "create_model", "from_pretrained", "get_entry", "list_models", "register", "save_pretrained",
]
