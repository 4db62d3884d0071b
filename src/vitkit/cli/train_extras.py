"""Issue 13's `vitkit train` flags (LoRA, label files, Hugging Face datasets): ``add_extra_args`` adds them
to the train parser, ``extra_settings`` turns them into TrainConfig settings."""

from __future__ import annotations

import argparse
from typing import Any

from ..lora import LORA_TARGETS
from ..multilabel import LOSSES
from ..training import TrainConfig
from ..training.options import STRATEGIES


def _names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def add_extra_args(p: argparse.ArgumentParser) -> None:
    """Add issue 13's flags to the ``vitkit train`` parser."""
    d = TrainConfig
    g = p.add_argument_group("LoRA (parameter-efficient fine-tuning)")
    g.add_argument("--lora-rank", type=int, default=d.lora_rank,
                   help="train rank-R LoRA adapters and the head instead of the weights (0: off)")
    g.add_argument("--lora-alpha", type=float, default=d.lora_alpha, help="adapter scale alpha (update x alpha/R)")
    g.add_argument("--lora-dropout", type=float, default=d.lora_dropout, help="dropout on the adapters' input")
    g.add_argument("--lora-targets", type=_names, default=d.lora_targets, metavar="LIST",
                   help=f"comma-separated linears to adapt among {','.join(LORA_TARGETS)} "
                        f"(default: {','.join(d.lora_targets)})")
    g = p.add_argument_group("data sources (instead of DATA)")
    g.add_argument("--labels", metavar="FILE", help="CSV (path,label or path,labels with ';'-separated classes) or "
                   "JSONL ({\"path\": ..., \"label(s)\": ...}) label file; paths relative to the file")
    g.add_argument("--val-labels", metavar="FILE", help="validation label file (default: --val-fraction of --labels)")
    g.add_argument("--hf-dataset", metavar="DIR", help="a Hugging Face dataset saved with save_to_disk "
                   "(its validation split, else --val-fraction of train)")
    g.add_argument("--image-column", help="the --hf-dataset's image column (default: the one of Image type)")
    g.add_argument("--label-column", help="the --hf-dataset's label column (default: the ClassLabel one)")
    g = p.add_argument_group("multi-label (several classes per image; on by itself for a 'labels' column)")
    g.add_argument("--multi-label", action="store_const", const=True, default=None,
                   help="train with sigmoid outputs even on single-label data (one-element label sets)")
    g.add_argument("--loss", choices=LOSSES, default=d.multilabel_loss,
                   help="multi-label loss: bce (with --label-smoothing) or asl (asymmetric loss)")
    g.add_argument("--threshold", type=float, default=d.threshold, help="score threshold of the F1 metrics")
    g = p.add_argument_group("several processes (torchrun)")
    g.add_argument("--strategy", choices=STRATEGIES, default=d.strategy,
                   help="ddp: every rank holds the whole model; fsdp: parameters, gradients and optimizer state "
                        "sharded across ranks (torch FSDP2)")
    g = p.add_argument_group("experiment tracking")
    g.add_argument("--report-to", type=_names, default=d.report_to, metavar="LIST",
                   help="send each epoch's metrics row to these trackers too (comma-separated; built in: tensorboard, "
                        "written to OUT/tensorboard)")


def extra_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig settings of issue 13's flags."""
    return {"lora_rank": args.lora_rank, "lora_alpha": args.lora_alpha, "lora_dropout": args.lora_dropout,
            "lora_targets": tuple(args.lora_targets), "labels": args.labels, "val_labels": args.val_labels,
            "hf_dataset": args.hf_dataset, "image_column": args.image_column, "label_column": args.label_column,
            "multi_label": args.multi_label, "multilabel_loss": args.loss, "threshold": args.threshold,
            "report_to": tuple(args.report_to), "strategy": args.strategy}


def pct(x: float | None) -> str:
    """A fraction as the console shows it ('99.72%'), '-' for none."""
    return "-" if x is None else f"{100 * x:.2f}%"


def multilabel_epoch_line(r: dict[str, Any]) -> str:
    """A multi-label epoch row as the CLI prints it (mAP and F1 instead of top-1/top-5)."""
    return (f"epoch {r['epoch']:3d}  train_loss {r['train_loss']:.4f}  val_loss {r['val_loss']:.4f}  "
            f"mAP {pct(r['val_mAP'])}  F1 micro {pct(r['val_f1_micro'])} macro {pct(r['val_f1_macro'])}  "
            f"{r['images_per_sec']:.0f} img/s  {r['epoch_time_s']:.1f}s")


def best_line(r: dict[str, Any]) -> str:
    """'best top-1 X (epoch N), final Y' or, for a multi-label run, the same in mAP."""
    if r.get("best_metric") == "val_mAP":
        return (f"best mAP {pct(r['best_val_mAP'])} (epoch {r['best_epoch']}), final mAP {pct(r['final_val_mAP'])}"
                f" (F1 micro {pct(r['final_val_f1_micro'])}, macro {pct(r['final_val_f1_macro'])})")
    return f"best top-1 {pct(r['best_val_top1'])} (epoch {r['best_epoch']}), final {pct(r['final_val_top1'])}"


def data_details(summary: dict[str, Any]) -> str:
    """', multi-label (1.8 labels per image)' / ', columns image/label' for label files and datasets, else ''."""
    parts = []
    if "kind" in summary:
        per = summary.get("labels_per_image")
        parts.append(summary["kind"] + (f" ({per:g} labels per image)" if summary["kind"] == "multi-label" else ""))
    if "image_column" in summary:
        parts.append(f"columns {summary['image_column']}/{summary['label_column']}")
    if "val_source" in summary:
        parts.append(f"validation from {summary['val_source']}")
    return "".join(f", {p}" for p in parts)


def lora_line(summary: dict[str, Any]) -> str:
    """'LoRA r=8 alpha=16 on qkv,proj (12 linears)' for a run with adapters, else ''."""
    lora = summary.get("lora")
    if not lora:
        return ""
    return (f"LoRA r={lora['rank']} alpha={lora['alpha']:g} on {','.join(lora['targets'])} "
            f"({lora['adapted_linears']} linears)")
