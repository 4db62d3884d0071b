"""``evaluate``: a model scored on the data a run describes (a folder, the digits, a label file or a saved
Hugging Face dataset; single- or multi-label), the split it held out or a whole folder."""

from __future__ import annotations

from typing import Any

import torch

from ..choices import EVAL_SPLITS
from ..data.datasets import DIGITS_SOURCE, DataSplits, folder_classes, load_whole_folder
from ..errors import ConfigError
from ..runtime import load_model
from .config import DATA_SETTINGS, TrainConfig
from .distributed import ShardBatchSampler, pick_device
from .setup import EvalTransform, build_model, check_model_classes, default_workers, make_loader
from .sources import load_data
from .tasks import make_task

SPLITS = EVAL_SPLITS
# the TrainConfig settings that say which data a run saw (what ``evaluate`` accepts as ``data_settings``)


def _splits(data: str | None, split: str, cfg: TrainConfig) -> DataSplits:
    if split != "all":
        return load_data(cfg.source, cfg.run.seed)
    if data is None or data == DIGITS_SOURCE or cfg.source.labels or cfg.source.hf_dataset:
        raise ConfigError("split='all' scores every image of an image folder; for the digits, a label file or a "
                          "dataset choose split='val' (the held-out images) or 'train'.")
    return load_whole_folder(data)


def evaluate(model: str | torch.nn.Module, data: str | None = None, *, weights: str | None = None,
             val_fraction: float = 0.2, seed: int = 0, batch_size: int = 128, split: str = "val",
             workers: int | None = None, device: str | None = None, **data_settings: Any) -> dict[str, Any]:
    """Accuracy of ``model`` (a name, saved folder or checkpoint, or a model) on a data split.

    The data is described as for ``train``: ``data`` (an image folder; None: the bundled digits) or
    ``labels`` (+ ``val_labels``) or ``hf_dataset`` (+ ``image_column``/``label_column``), with
    ``multi_label`` and ``threshold`` for multi-label data. ``split='val'`` is the split ``train`` held
    out with the same ``val_fraction`` and ``seed``; 'train' the rest; 'all' every image of a folder
    (its val/ when it has train/ and val/). Returns val_loss, val_top1 (and val_top5 for more than 5
    classes) or, multi-label, val_mAP/val_f1_micro/val_f1_macro; val_images, skipped_images, the
    confusion matrix (single-label, up to 200 classes) and the class names.
    """
    if split not in SPLITS:
        raise ConfigError(f"split={split!r} is not known: expected 'val' (held out), 'train' or 'all' (a whole "
                          f"folder).")
    unknown = sorted(set(data_settings) - set(DATA_SETTINGS))
    if unknown:
        raise ConfigError(f"evaluate() got unknown data setting(s) {', '.join(unknown)}; expected some of "
                          f"{', '.join(DATA_SETTINGS)}.")
    cfg = TrainConfig(data=data, val_fraction=val_fraction, seed=seed, **data_settings)
    cfg.validate()
    if isinstance(model, str) and not weights:
        model = load_model(model)
    if not isinstance(model, str) and not cfg.source.is_digits and not (cfg.source.labels or cfg.source.hf_dataset):
        check_model_classes(model, folder_classes(data))  # before a single image of a wrong folder is read
    splits = _splits(data, split, cfg)
    if isinstance(model, str):
        model = build_model(model, num_classes=len(splits.classes), weights=weights)
    check_model_classes(model, splits.classes)
    dev = pick_device(device)
    model.to(dev)
    images = splits.train if split == "train" else splits.val
    sampler = ShardBatchSampler(len(images), batch_size=batch_size)
    n_workers = workers if workers is not None else default_workers(images, 1)
    loader = make_loader(images, EvalTransform(model), sampler, n_workers)
    metrics, confusion, skipped = make_task(cfg, splits).evaluate(model, loader, len(splits.classes), dev)
    matrix = None if confusion is None else confusion.tolist()
    return {**metrics, "skipped_images": skipped + len(splits.skipped), "confusion": matrix,
            "classes": list(splits.classes), "split": split, "data": splits.source}
