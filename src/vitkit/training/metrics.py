"""Epoch metrics: accuracy and confusion counts, the metrics files, the plots and the report."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..fileio import atomic_write

METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
REPORT_FILE = "report.json"
MAX_CONFUSION_CLASSES = 200  # beyond this a confusion matrix is neither counted nor plotted
PLOT_FILES = {"loss": "loss.png", "accuracy": "accuracy.png", "confusion": "confusion_matrix.png"}


class EvalCounts:
    """Sums over an evaluation pass that add up across batches and ranks: loss, top-1/top-5 hits, confusion."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu") -> None:
        self.num_classes = num_classes
        # [loss sum, top-1 hits, top-5 hits, count] in float64 so sums over ranks are exact
        self.totals = torch.zeros(4, dtype=torch.float64, device=device)
        # counted for a plot someone can read; K x K int64 is 800 MB at 10,000 classes
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device) \
            if num_classes <= MAX_CONFUSION_CLASSES else None

    def update(self, logits: torch.Tensor, labels: torch.Tensor, loss_sum: torch.Tensor) -> None:
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices  # (B, k)
        hits = top.eq(labels.view(-1, 1))
        self.totals += torch.stack([loss_sum.double(), hits[:, 0].sum().double(), hits.any(dim=1).sum().double(),
                                    torch.tensor(float(labels.numel()), dtype=torch.float64, device=labels.device)])
        if self.confusion is not None:
            flat = labels * self.num_classes + top[:, 0]  # (B,) cells of the (K, K) matrix, row-major
            self.confusion += torch.bincount(flat, minlength=self.num_classes ** 2).view(self.num_classes, -1)

    def summary(self) -> dict[str, float]:
        loss, top1, top5, count = self.totals.tolist()
        n = max(count, 1.0)
        top = {"val_top5": top5 / n} if self.num_classes > 5 else {}  # top-5 of 5 classes or fewer: always 100%
        return {"val_loss": loss / n, "val_top1": top1 / n, **top, "val_images": int(count)}


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


def plot_curves(rows: Sequence[dict[str, Any]], out: Path, title: str = "") -> dict[str, Path]:
    """Loss and accuracy per epoch as PNG files; returns {'loss': path, 'accuracy': path}.

    ``title`` (e.g. 'vit_digits, runs/digits') heads both; epochs are integer ticks, accuracy is in percent.
    """
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    epochs = [r["epoch"] for r in rows]
    specs = {"loss": (("train_loss", "train"), ("val_loss", "validation")),
             "accuracy": (("val_top1", "validation top-1"), ("val_top5", "validation top-5"),
                          ("val_mAP", "validation mAP"), ("val_f1_macro", "validation macro F1"))}  # multi-label
    best_key = "val_top1" if rows and "val_top1" in rows[-1] else "val_mAP"  # multi-label runs: mAP
    best = max(rows, key=lambda r: r[best_key]) if rows else None
    written = {}
    for kind, series in specs.items():
        fig = _figure()
        ax = fig.add_subplot()
        for key, label in series:
            if key not in rows[-1]:
                continue  # top-1 for single-label runs, mAP for multi-label ones
            ax.plot(epochs, [r[key] for r in rows], marker="o", markersize=3, label=label)
        if kind == "accuracy" and best is not None:
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
            label = f"best {100 * best[best_key]:.2f}% (epoch {best['epoch']})"
            ax.annotate(label, (best["epoch"], best[best_key]), textcoords="offset points", xytext=(0, -14),
                        ha="center", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(kind)
        ax.set_title(f"{kind}: {title}" if title else kind, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        written[kind] = out / PLOT_FILES[kind]
        atomic_write(written[kind], lambda tmp, fig=fig: fig.savefig(tmp, format="png"))
    return written


def plot_confusion(confusion: torch.Tensor, classes: Sequence[str], out: Path, title: str = "") -> Path:
    """The validation confusion matrix (rows: true class, columns: predicted) as a PNG.

    The colour scale is a square root (with a colour bar), so a single error among hundreds of correct
    images still shows as a tint; each non-zero cell is written out, its text sized to the cell.
    """
    from matplotlib.colors import PowerNorm

    counts = confusion.cpu().numpy()
    n = len(classes)
    size = min(4.0 + 0.45 * n, 20.0)
    fig = _figure(size + 1.2, size)
    ax = fig.add_subplot()
    top = max(int(counts.max()) if counts.size else 0, 1)
    image = ax.imshow(counts, cmap="Blues", norm=PowerNorm(gamma=0.5, vmin=0, vmax=top))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="images")
    if n <= 40:
        ax.set_xticks(range(n), list(classes), rotation=90 if n > 10 else 0)
        ax.set_yticks(range(n), list(classes))
        fontsize = max(5.0, min(10.0, 220.0 / n))
        for i, row in enumerate(counts.tolist()):
            for j, v in enumerate(row):
                if v:
                    ax.text(j, i, str(v), ha="center", va="center", fontsize=fontsize,
                            color="white" if (v / top) ** 0.5 > 0.6 else "black")
    total, correct = int(counts.sum()), int(counts.trace())
    accuracy = f"top-1 {100 * correct / max(total, 1):.2f}% ({correct}/{total})"
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion: {title}\n{accuracy}" if title else f"confusion, {accuracy}", fontsize=10)
    fig.tight_layout()
    path = out / PLOT_FILES["confusion"]
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    return path


def write_report(report: dict[str, Any], out: Path) -> Path:
    return atomic_write(out / REPORT_FILE, lambda tmp: tmp.write_text(json.dumps(report, indent=2) + "\n"))
