"""Where a run's images come from: an image folder or the bundled digits (``data``), a label file
(``labels``, CSV or JSONL, single- or multi-label, with an optional ``val_labels``), or a Hugging Face
dataset saved with ``save_to_disk`` (``hf_dataset``, with ``image_column``/``label_column``)."""

from __future__ import annotations

from typing import Any

from ..data.datasets import DataSplits, load_splits
from ..data.hfdatasets import load_hf_splits
from ..data.labelfiles import is_multi_label, load_label_splits
from ..errors import ConfigError, DataError
from .tasks import as_multi_label


def load_data(cfg: Any) -> DataSplits:
    """The training and validation splits ``cfg`` names (one source; TrainConfig.validate checks that), with
    multi-hot targets when the data is multi-label or ``cfg.multi_label`` asks for it."""
    if cfg.labels:
        splits = load_label_splits(cfg.labels, cfg.val_labels, val_fraction=cfg.val_fraction, seed=cfg.seed,
                                   multi_label=cfg.multi_label)
    elif cfg.hf_dataset:
        splits = load_hf_splits(cfg.hf_dataset, image_column=cfg.image_column, label_column=cfg.label_column,
                                val_fraction=cfg.val_fraction, seed=cfg.seed)
    else:
        splits = load_splits(cfg.data, val_fraction=cfg.val_fraction, seed=cfg.seed)
    if len(splits.classes) < 2 and not (cfg.multi_label or is_multi_label(splits)):
        raise DataError(f"{splits.source} has one class ({splits.classes[0] if splits.classes else 'none'}): a "
                        f"classifier of one class is always right, so there is nothing to learn. Add a folder (or "
                        f"label) per class, two or more.")
    if cfg.multi_label is False and is_multi_label(splits):
        raise ConfigError(f"{splits.source} is multi-label (several classes per image) but multi_label=False; "
                          f"drop that setting to train a multi-label model.")
    return as_multi_label(splits) if cfg.multi_label else splits
