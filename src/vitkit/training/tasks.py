"""What a run learns, as a task object the loop asks instead of branching: the loss, the validation, the
score that picks the best checkpoint, the console's epoch and best lines, and the task's part of the report.

``SingleLabelTask``: one class per image, cross-entropy (label smoothing, mixup/cutmix), top-1 (and top-5
for more than 5 classes). ``MultiLabelTask``: several classes per image, independent sigmoid outputs.

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
from ..data.labelfiles import MultiHotTargets, MultiLabelImages, is_multi_label
from ..errors import ConfigError, keyword
from ..multilabel import MultiLabelMeter, multilabel_loss
from .metrics import EvalCounts


def pct(x: float | None) -> str:
    """A fraction as the console shows it ('99.72%'), '-' for none."""
    return "-" if x is None else f"{100 * x:.2f}%"


def _timing(r: dict[str, Any]) -> str:
    skipped = f"  skipped {r['skipped_images']}" if r.get("skipped_images") else ""
    return f"{r['images_per_sec']:.0f} img/s  {r['epoch_time_s']:.1f}s{skipped}"


def _losses(r: dict[str, Any]) -> str:
    return f"epoch {r['epoch']:3d}  train_loss {r['train_loss']:.4f}  val_loss {r['val_loss']:.4f}  "


@torch.no_grad()
def evaluate_loader(model: torch.nn.Module, loader: Any, num_classes: int, device: torch.device,
                    dist: Any = None) -> tuple[dict[str, float], torch.Tensor | None, int]:
    """(metrics, confusion matrix (None beyond MAX_CONFUSION_CLASSES), images skipped) of a single-label
    ``model`` over ``loader``, summed across ranks."""
    was_training = model.training
    model.eval()
    counts = EvalCounts(num_classes, device)
    skipped = 0
    for x, y, n_skipped in loader:
        skipped += n_skipped
        if not len(y):
            continue
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x).float()
        counts.update(logits, y, F.cross_entropy(logits, y, reduction="sum"))
    model.train(was_training)
    if dist is not None:
        dist.all_reduce_sum(counts.totals)
        if counts.confusion is not None:
            dist.all_reduce_sum(counts.confusion)
        skipped = int(dist.all_reduce_sum(torch.tensor([skipped], device=device)).item())
    return counts.summary(), None if counts.confusion is None else counts.confusion.cpu(), skipped


class SingleLabelTask:
    """One class per image: cross-entropy, top-1/top-5, a confusion matrix; the best epoch has the best top-1."""

    kind = "single-label"
    best_metric = "val_top1"
    one_class_per_image = True  # samples can be named by their class

    def __init__(self, cfg: Any) -> None:
        self.label_smoothing = cfg.optim.label_smoothing

    def loss(self, out: Any, target: torch.Tensor) -> torch.Tensor:
        """Mean loss; a distilled model's two heads both learn the labels (soft mixup targets: no smoothing)."""
        outs = out if isinstance(out, tuple) else (out,)
        smoothing = 0.0 if target.ndim == 2 else self.label_smoothing  # soft targets carry their smoothing
        return sum(F.cross_entropy(o.float(), target, label_smoothing=smoothing) for o in outs) / len(outs)

    def evaluate(self, model: torch.nn.Module, loader: Any, num_classes: int, device: torch.device,
                 dist: Any = None) -> tuple[dict[str, float], torch.Tensor | None, int]:
        return evaluate_loader(model, loader, num_classes, device, dist)

    def summary(self) -> dict[str, Any]:
        return {}

    def report(self, rows: list[dict[str, Any]], best: float | None) -> dict[str, Any]:
        last = rows[-1] if rows else {}
        return {"best_metric": self.best_metric, "best_val_top1": best, "final_val_top1": last.get("val_top1"),
                "final_val_top5": last.get("val_top5")}

    @staticmethod
    def epoch_line(r: dict[str, Any]) -> str:
        top5 = f"  top5 {pct(r['val_top5'])}" if "val_top5" in r else ""
        ema = f"  ema top1 {pct(r['ema_val_top1'])}" if "ema_val_top1" in r else ""
        return f"{_losses(r)}top1 {pct(r['val_top1'])}{top5}{ema}  {_timing(r)}"

    @staticmethod
    def best_line(r: dict[str, Any]) -> str:
        return f"best top-1 {pct(r['best_val_top1'])} (epoch {r['best_epoch']}), final {pct(r['final_val_top1'])}"

    @staticmethod
    def eval_line(r: dict[str, Any]) -> str:
        hits = round(r["val_top1"] * r["val_images"])
        top5 = f", top-5 {pct(r['val_top5'])}" if "val_top5" in r else ""
        return f"top-1 {pct(r['val_top1'])} ({hits}/{r['val_images']}){top5}"


BEST_METRIC = "val_mAP"


class OneHotImages(MultiLabelImages):
    """Single-label images seen as one-element label sets (multi-hot (K,) targets, held sparse), read by the
    source's own ``load`` (so files, memory and dataset rows all work)."""

    def __init__(self, base: LabelledImages, num_classes: int) -> None:
        super().__init__(base.items, MultiHotTargets(([y] for y in base.labels), num_classes))
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
    """Several classes per image: BCE or ASL, mAP and F1 at a threshold; the best epoch has the best mAP."""

    kind = "multi-label"
    best_metric = BEST_METRIC
    one_class_per_image = False

    def __init__(self, cfg: Any) -> None:
        if cfg.augment.mixup or cfg.augment.cutmix:
            hints = keyword("mixup"), keyword("cutmix")
            raise ConfigError(f"{hints[0]}/{hints[1]} mix one class per image; they are not available for "
                              f"multi-label data. Drop them (or use single-label data).", hints=hints)
        if cfg.distillation.teacher or cfg.optim.ema:
            named = keyword("teacher" if cfg.distillation.teacher else "ema")
            raise ConfigError(f"{named} is not available for multi-label data yet (distillation and the EMA's "
                              f"report are single-label). Drop it for this run.", hints=(named,))
        self.threshold = cfg.source.threshold
        self.loss_name = cfg.optim.multilabel_loss
        self.loss_fn = multilabel_loss(cfg.optim.multilabel_loss, label_smoothing=cfg.optim.label_smoothing)

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

    def summary(self) -> dict[str, Any]:
        return {"multi_label": True, "loss": self.loss_name}

    def report(self, rows: list[dict[str, Any]], best: float | None) -> dict[str, Any]:
        last = rows[-1] if rows else {}
        return {"best_metric": BEST_METRIC, "best_val_mAP": best, "final_val_mAP": last.get("val_mAP"),
                "final_val_f1_micro": last.get("val_f1_micro"), "final_val_f1_macro": last.get("val_f1_macro"),
                "threshold": self.threshold}

    @staticmethod
    def epoch_line(r: dict[str, Any]) -> str:
        return (f"{_losses(r)}mAP {pct(r['val_mAP'])}  F1 micro {pct(r['val_f1_micro'])} macro "
                f"{pct(r['val_f1_macro'])}  {_timing(r)}")

    @staticmethod
    def best_line(r: dict[str, Any]) -> str:
        return (f"best mAP {pct(r['best_val_mAP'])} (epoch {r['best_epoch']}), final mAP {pct(r['final_val_mAP'])}"
                f" (F1 micro {pct(r['final_val_f1_micro'])}, macro {pct(r['final_val_f1_macro'])})")

    @staticmethod
    def eval_line(r: dict[str, Any]) -> str:
        return f"mAP {pct(r['val_mAP'])}, F1 micro {pct(r['val_f1_micro'])} macro {pct(r['val_f1_macro'])}"


def _gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Every rank's (n_r, K) rows, concatenated (ranks may hold different counts)."""
    parts: list[Any] = [None] * torch_dist.get_world_size()
    torch_dist.all_gather_object(parts, t.cpu())
    return torch.cat(parts)


def make_task(cfg: Any, splits: DataSplits) -> SingleLabelTask | MultiLabelTask:
    """The run's task: multi-label when the data is (or ``cfg.source.multi_label`` made it so), else single-label."""
    return MultiLabelTask(cfg) if is_multi_label(splits) else SingleLabelTask(cfg)


def task_of(row: dict[str, Any]) -> type[SingleLabelTask] | type[MultiLabelTask]:
    """The task class that wrote an epoch row, a report or an evaluation (for their console lines)."""
    multi = "val_mAP" in row or row.get("best_metric") == BEST_METRIC
    return MultiLabelTask if multi else SingleLabelTask
