"""Multi-label runs: several classes per image, independent sigmoid outputs.

A run is multi-label when its data is (a label file with a ``labels`` column, a dataset with a list of
ClassLabel) or when ``multi_label=True`` turns single-label data into one-element label sets. Then:
the loss is BCE-with-logits (with ``label_smoothing``) or ASL (``multilabel_loss='asl'``); validation
reports ``val_loss`` (plain BCE), ``val_mAP`` and micro/macro F1 at ``threshold`` instead of top-1/top-5;
the best checkpoint is the one of the highest mAP; the exported model says ``multi_label=True`` in its
pretrained_cfg, so ``vitkit predict`` scores classes with a sigmoid and a threshold.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as torch_dist
import torch.nn.functional as F

from ..data.datasets import DataSplits, LabelledImages
from ..data.labelfiles import MultiLabelImages, is_multi_label
from ..errors import ConfigError
from ..multilabel import MultiLabelMeter, multilabel_loss

BEST_METRIC = "val_mAP"


class OneHotImages(MultiLabelImages):
    """Single-label images seen as one-element label sets (multi-hot (K,) targets), read by the source's own
    ``load`` (so files, memory and dataset rows all work)."""

    def __init__(self, base: LabelledImages, num_classes: int) -> None:
        super().__init__(base.items, [F.one_hot(torch.tensor(y), num_classes).float() for y in base.labels])
        self.base = base

    def load(self, index: int) -> Any:
        return self.base.load(index)


def as_multi_label(splits: DataSplits) -> DataSplits:
    """``splits`` with multi-hot targets (unchanged when they are already multi-label)."""
    if is_multi_label(splits):
        return splits
    k = len(splits.classes)
    return DataSplits(OneHotImages(splits.train, k), OneHotImages(splits.val, k), splits.classes, splits.source,
                      splits.skipped, info={**splits.info, "kind": "multi-label", "labels_per_image": 1.0})


class MultiLabelTask:
    """The loss and the validation of a multi-label run."""

    def __init__(self, cfg: Any) -> None:
        if cfg.mixup or cfg.cutmix:
            raise ConfigError("--mixup/--cutmix mix one class per image; they are not available for multi-label "
                              "data. Drop them (or use single-label data).")
        self.threshold = cfg.threshold
        self.loss_fn = multilabel_loss(cfg.multilabel_loss, label_smoothing=cfg.label_smoothing)

    def loss(self, out: Any, target: torch.Tensor) -> torch.Tensor:
        """Mean loss over the batch and classes; a distilled model's two heads both learn the labels."""
        outs = out if isinstance(out, tuple) else (out,)
        return sum(self.loss_fn(o.float(), target) for o in outs) / len(outs)

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, loader: Any, num_classes: int, device: torch.device,
                 dist: Any = None) -> tuple[dict[str, float], None, int]:
        """(val_loss (plain BCE), val_mAP, val_f1_micro, val_f1_macro, val_images; no confusion; skipped)
        over ``loader``, gathered across ranks."""
        was_training = model.training
        model.eval()
        meter = MultiLabelMeter()
        sums = torch.zeros(2, dtype=torch.float64)  # [BCE sum over samples and classes, images skipped]
        for x, y, n_skipped in loader:
            sums[1] += n_skipped
            if not len(y):
                continue
            logits = model(x.to(device, non_blocking=True)).float()
            y = y.to(device, non_blocking=True)
            sums[0] += float(F.binary_cross_entropy_with_logits(logits, y, reduction="sum"))
            meter.update(logits, y)
        model.train(was_training)
        scores, targets = meter.tensors() if meter.scores else (torch.zeros(0, num_classes),) * 2
        if dist is not None and dist.initialized:
            sums = dist.all_reduce_sum(sums.to(device)).cpu()
            scores, targets = _gather_rows(scores), _gather_rows(targets)
        meter.scores, meter.targets = [scores], [targets]
        m = meter.compute(self.threshold)
        n = int(m["samples"])
        metrics = {"val_loss": float(sums[0]) / max(n * num_classes, 1), "val_mAP": m["mAP"],
                   "val_f1_micro": m["f1_micro"], "val_f1_macro": m["f1_macro"], "val_images": n}
        return metrics, None, int(sums[1])


def _gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Every rank's (n_r, K) rows, concatenated (ranks may hold different counts)."""
    parts: list[Any] = [None] * torch_dist.get_world_size()
    torch_dist.all_gather_object(parts, t.cpu())
    return torch.cat(parts)


def multilabel_task(cfg: Any, splits: DataSplits) -> MultiLabelTask | None:
    """The run's multi-label task, or None for a single-label run."""
    return MultiLabelTask(cfg) if is_multi_label(splits) else None


def multilabel_report(task: MultiLabelTask | None, rows: list[dict[str, Any]], best: float) -> dict[str, Any]:
    """What a multi-label run's report says instead of top-1: mAP and F1 (best: the epoch of the highest mAP)."""
    if task is None:
        return {"best_metric": "val_top1"}
    last = rows[-1] if rows else {}
    return {"best_metric": BEST_METRIC, "best_val_top1": None, "best_val_mAP": best if rows else None,
            "final_val_mAP": last.get("val_mAP"), "final_val_f1_micro": last.get("val_f1_micro"),
            "final_val_f1_macro": last.get("val_f1_macro"), "threshold": task.threshold}
