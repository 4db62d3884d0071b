"""vitkit: Vision Transformers on PyTorch."""

from __future__ import annotations

from .attention import attention_rollout, last_layer_attention, save_attention_map
from .config import PretrainedCfg, ViTConfig
from .data.images import list_images, load_image
from .errors import (
    CheckpointError,
    ConfigError,
    DataError,
    ImageError,
    InputSizeError,
    UnknownModelError,
    VitkitError,
)
from .export import export_onnx
from .features import extract_features, load_features, merge_features
from .labels import load_labels
from .model import VisionTransformer
from .predict import predict
from .processor import ImageProcessor
from .registry import ModelEntry, create_model, get_entry, list_models, register
from .runtime import from_pretrained, load_model, resolve_data_config
from .summary import summarize
from .training import TrainConfig, TrainResult, evaluate, train
from .version import __version__
from .weights import save_pretrained

__all__ = [
    "CheckpointError", "ConfigError", "DataError", "ImageError", "InputSizeError", "ModelEntry",
    "PretrainedCfg", "UnknownModelError", "ViTConfig", "VisionTransformer", "VitkitError", "__version__",
    "create_model", "from_pretrained", "get_entry", "list_models", "register", "save_pretrained",
    "ImageProcessor", "attention_rollout", "extract_features", "last_layer_attention", "list_images",
    "load_features", "load_image", "load_labels", "merge_features", "predict", "save_attention_map", "summarize",
    "TrainConfig", "TrainResult", "evaluate", "export_onnx", "load_model", "resolve_data_config", "train",
]
