"""Where a run's images come from: an image folder or the bundled digits (``data``), a label file
(``labels``, CSV or JSONL, single- or multi-label, with an optional ``val_labels``), or a Hugging Face
dataset saved with ``save_to_disk`` (``hf_dataset``, with ``image_column``/``label_column``)."""

from __future__ import annotations

from typing import Any

from ..data.datasets import DataSplits, load_splits
from ..data.hfdatasets import load_hf_splits
from ..data.labelfiles import load_label_splits


def load_data(cfg: Any) -> DataSplits:
    """The training and validation splits ``cfg`` names (one source; TrainConfig.validate checks that)."""
    if cfg.labels:
        return load_label_splits(cfg.labels, cfg.val_labels, val_fraction=cfg.val_fraction, seed=cfg.seed)
    if cfg.hf_dataset:
        return load_hf_splits(cfg.hf_dataset, image_column=cfg.image_column, label_column=cfg.label_column,
                              val_fraction=cfg.val_fraction, seed=cfg.seed)
    return load_splits(cfg.data, val_fraction=cfg.val_fraction, seed=cfg.seed)
