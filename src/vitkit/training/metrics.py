"""Epoch metrics: accuracy and confusion counts, the metrics files, the plots and the report."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..fileio import atomic_write

logger = logging.getLogger(__name__)

METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
REPORT_FILE = "report.json"
PLOT_FILES = {"loss": "loss.png", "accuracy": "accuracy.png", "confusion": "confusion_matrix.png"}


class EvalCounts:
    """Sums over an evaluation pass that add up across batches and ranks: loss, top-1/top-5 hits, confusion."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu") -> None:
        self.num_classes = num_classes
        # [loss sum, top-1 hits, top-5 hits, count] in float64 so sums over ranks are exact
        self.totals = torch.zeros(4, dtype=torch.float64, device=device)
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, logits: torch.Tensor, labels: torch.Tensor, loss_sum: torch.Tensor) -> None:
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices  # (B, k)
        hits = top.eq(labels.view(-1, 1))
        self.totals += torch.stack([loss_sum.double(), hits[:, 0].sum().double(), hits.any(dim=1).sum().double(),
                                    torch.tensor(float(labels.numel()), dtype=torch.float64, device=labels.device)])
        flat = labels * self.num_classes + top[:, 0]
        self.confusion += torch.bincount(flat, minlength=self.num_classes ** 2).view(self.num_classes, -1)

    def summary(self) -> dict[str, float]:
        loss, top1, top5, count = self.totals.tolist()
        n = max(count, 1.0)
        return {"val_loss": loss / n, "val_top1": top1 / n, "val_top5": top5 / n, "val_images": int(count)}


def write_metrics(out: Path, rows: Sequence[dict[str, Any]]) -> None:
    """One row per epoch in ``metrics.jsonl`` and ``metrics.csv`` (rewritten whole, so a resume stays tidy)."""
    lines = "".join(json.dumps(r) + "\n" for r in rows)
    atomic_write(out / METRICS_JSONL, lambda tmp: tmp.write_text(lines))
    if not rows:
        return
    fields = list(rows[0])

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(out / METRICS_CSV, write_csv)


def _figure(width: float = 6.0, height: float = 4.0) -> Any:
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, safe in any process

    return Figure(figsize=(width, height), dpi=100)


def plot_curves(rows: Sequence[dict[str, Any]], out: Path) -> dict[str, Path]:
    """Loss and accuracy per epoch as PNG files; returns {'loss': path, 'accuracy': path}."""
    epochs = [r["epoch"] for r in rows]
    specs = {"loss": (("train_loss", "train"), ("val_loss", "validation")),
             "accuracy": (("val_top1", "validation top-1"), ("val_top5", "validation top-5"),
                          ("val_mAP", "validation mAP"), ("val_f1_macro", "validation macro F1"))}  # multi-label
    written = {}
    for kind, series in specs.items():
        fig = _figure()
        ax = fig.add_subplot()
        for key, label in series:
            if key not in rows[-1]:
                continue  # top-1 for single-label runs, mAP for multi-label ones
            ax.plot(epochs, [r[key] for r in rows], marker="o", markersize=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(kind)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        written[kind] = out / PLOT_FILES[kind]
        fig.savefig(written[kind])
    return written


def plot_confusion(confusion: torch.Tensor, classes: Sequence[str], out: Path) -> Path:
    """The validation confusion matrix (rows: true class, columns: predicted) as a PNG."""
    n = len(classes)
    size = min(4.0 + 0.35 * n, 20.0)
    fig = _figure(size, size)
    ax = fig.add_subplot()
    ax.imshow(confusion.cpu().numpy(), cmap="Blues")
    if n <= 30:
        ax.set_xticks(range(n), list(classes), rotation=90 if n > 10 else 0)
        ax.set_yticks(range(n), list(classes))
        top = int(confusion.max()) if confusion.numel() else 0
        for i, row in enumerate(confusion.tolist()):
            for j, v in enumerate(row):
                if v:
                    ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                            color="white" if v > top / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    path = out / PLOT_FILES["confusion"]
    fig.savefig(path)
    return path


def write_report(report: dict[str, Any], out: Path) -> Path:
    return atomic_write(out / REPORT_FILE, lambda tmp: tmp.write_text(json.dumps(report, indent=2) + "\n"))
