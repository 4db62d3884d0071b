"""Fine-tuning: ``train`` a ViT on an image folder or the bundled digits (one CPU to many GPUs), ``evaluate`` it.

Modules: ``config`` (TrainConfig and presets), ``optim`` (freezing, AdamW groups, layer decay, warmup +
cosine), ``distributed`` (process group, sharded batches), ``checkpoint`` (atomic training state, exports),
``metrics`` (accuracy, metrics files, plots, report), ``loop`` (the Trainer), ``api`` (train) and
``evaluation`` (evaluate).
"""

from __future__ import annotations

from .api import TrainResult, train
from .config import TrainConfig, parse_freeze
from .evaluation import evaluate
from .interrupt import TrainingInterrupted
from .loop import NonFiniteLossError

__all__ = ["NonFiniteLossError", "TrainConfig", "TrainResult", "TrainingInterrupted", "evaluate", "parse_freeze",
           "train"]
