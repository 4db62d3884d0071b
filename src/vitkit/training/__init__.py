"""Fine-tuning: ``train`` a ViT on an image folder or the bundled digits (one CPU to many GPUs), ``evaluate`` it.

Modules: ``config`` (TrainConfig and presets), ``optim`` (freezing, AdamW groups, layer decay, warmup +
cosine), ``distributed`` (process group, sharded batches), ``checkpoint`` (atomic training state, exports),
``metrics`` (accuracy, metrics files, plots, report), ``loop`` (the Trainer), ``api`` (train) and
``evaluation`` (evaluate).

The names are imported on first use (PEP 562), so the CLI reads ``TrainConfig`` (its flags' defaults) for
`vitkit train --help` without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {"TrainResult": "api", "train": "api", "TrainConfig": "config", "parse_freeze": "config",
            "evaluate": "evaluation", "TrainingInterrupted": "interrupt", "NonFiniteLossError": "loop"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    from .api import TrainResult, train  # noqa: F401
    from .config import TrainConfig, parse_freeze  # noqa: F401
    from .evaluation import evaluate  # noqa: F401
    from .interrupt import TrainingInterrupted  # noqa: F401
    from .loop import NonFiniteLossError  # noqa: F401
