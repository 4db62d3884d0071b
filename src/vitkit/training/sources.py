"""Where a run's images come from: an image folder or the bundled digits (``data``), a label file
(``labels``, CSV or JSONL, single- or multi-label, with an optional ``val_labels``), or a Hugging Face
dataset saved with ``save_to_disk`` (``hf_dataset``, with ``image_column``/``label_column``)."""

from __future__ import annotations

from ..data.datasets import DataSplits, load_splits
from ..data.hfdatasets import load_hf_splits
from ..data.labelfiles import is_multi_label, load_label_splits
from ..errors import ConfigError, DataError
from .config import SourceSettings
from .tasks import as_multi_label


def load_data(source: SourceSettings, seed: int) -> DataSplits:
    """The training and validation splits ``source`` names (one source; its validation checks that), split with
    ``seed``, with multi-hot targets when the data is multi-label or ``source.multi_label`` asks for it."""
    if source.labels:
        splits = load_label_splits(source.labels, source.val_labels, val_fraction=source.val_fraction, seed=seed,
                                   multi_label=source.multi_label)
    elif source.hf_dataset:
        splits = load_hf_splits(source.hf_dataset, image_column=source.image_column, label_column=source.label_column,
                                val_fraction=source.val_fraction, seed=seed)
    else:
        splits = load_splits(source.data, val_fraction=source.val_fraction, seed=seed)
    if len(splits.classes) < 2 and not (source.multi_label or is_multi_label(splits)):
        raise DataError(f"{splits.source} has one class ({splits.classes[0] if splits.classes else 'none'}): a "
                        f"classifier of one class is always right, so there is nothing to learn. Add a folder (or "
                        f"label) per class, two or more.")
    if source.multi_label is False and is_multi_label(splits):
        raise ConfigError(f"{splits.source} is multi-label (several classes per image) but multi_label=False; "
                          f"drop that setting to train a multi-label model.")
    return as_multi_label(splits) if source.multi_label else splits
