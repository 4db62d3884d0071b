"""vitkit: Vision Transformers on PyTorch.

The public names are imported on first use (PEP 562 module ``__getattr__``), not when ``vitkit`` itself
is imported. That is for start-up time only: ``vitkit --help``, ``--version`` and a mistyped command
answer without importing torch. It does not dodge an import cycle: the floors (pyproject's import-linter
contract, tests/test_floors.py) hold for every module as before, and the names below are the same objects
an eager import would give.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import TYPE_CHECKING, Any

from .version import __version__

# public name -> the module that defines it
_EXPORTS = {
    "attention_rollout": "attention", "last_layer_attention": "attention", "save_attention_map": "attention",
    "PretrainedCfg": "config", "ViTConfig": "config", "list_images": "data.images", "load_image": "data.images",
    "CheckpointError": "errors", "ConfigError": "errors", "DataError": "errors", "ImageError": "errors",
    "InputSizeError": "errors", "UnknownModelError": "errors", "VitkitError": "errors",
    "export_onnx": "export", "export_model": "deploy", "optimize_model": "deploy",
    "optimize_for_inference": "inference", "extract_features": "features",
    "load_features": "features",
    "merge_features": "features", "load_labels": "labels", "VisionTransformer": "model", "predict": "predict",
    "ImageProcessor": "processor", "PatchProcessor": "patches", "PatchBatch": "patches",
    "ModelEntry": "registry", "create_model": "registry", "get_entry": "registry",
    "list_models": "registry", "register": "registry", "from_pretrained": "runtime", "load_model": "runtime",
    "resolve_data_config": "runtime", "summarize": "summary", "TrainConfig": "training",
    "TrainResult": "training", "evaluate": "training", "train": "training", "save_pretrained": "weights",
    "with_patch_size": "weights",
    "ImageTextModel": "imagetext", "TextConfig": "text", "load_image_text": "zeroshot", "zero_shot": "zeroshot",
    "zero_shot_classifier": "zeroshot",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    """Import a public name (or a submodule, e.g. ``vitkit.attention``) the first time it is asked for."""
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value
        return value
    if importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


class _Package(types.ModuleType):
    """``vitkit.predict`` is the function, as with eager imports, even after the submodule of the same name
    has been imported (importing a submodule binds it on its package; this binding is ignored)."""

    @property
    def predict(self) -> Any:
        return importlib.import_module(f"{__name__}.predict").predict

    @predict.setter
    def predict(self, value: Any) -> None:
        pass


sys.modules[__name__].__class__ = _Package

if TYPE_CHECKING:  # what the names are, for type checkers and IDEs
    from .attention import attention_rollout, last_layer_attention, save_attention_map  # noqa: F401
    from .config import PretrainedCfg, ViTConfig  # noqa: F401
    from .data.images import list_images, load_image  # noqa: F401
    from .deploy import export_model, optimize_model  # noqa: F401
    from .errors import (  # noqa: F401
        CheckpointError,
        ConfigError,
        DataError,
        ImageError,
        InputSizeError,
        UnknownModelError,
        VitkitError,
    )
    from .export import export_onnx  # noqa: F401
    from .features import extract_features, load_features, merge_features  # noqa: F401
    from .imagetext import ImageTextModel  # noqa: F401
    from .inference import optimize_for_inference  # noqa: F401
    from .labels import load_labels  # noqa: F401
    from .model import VisionTransformer  # noqa: F401
    from .predict import predict  # noqa: F401
    from .processor import ImageProcessor  # noqa: F401
    from .registry import ModelEntry, create_model, get_entry, list_models, register  # noqa: F401
    from .runtime import from_pretrained, load_model, resolve_data_config  # noqa: F401
    from .summary import summarize  # noqa: F401
    from .text import TextConfig  # noqa: F401
    from .training import TrainConfig, TrainResult, evaluate, train  # noqa: F401
    from .weights import save_pretrained  # noqa: F401
    from .zeroshot import load_image_text, zero_shot, zero_shot_classifier  # noqa: F401
