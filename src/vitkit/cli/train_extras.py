"""Issue 13's `vitkit train` flags (LoRA, label files, Hugging Face datasets): ``add_extra_args`` adds them
to the train parser, ``extra_settings`` turns them into TrainConfig settings."""

from __future__ import annotations

import argparse
from typing import Any

from ..lora import LORA_TARGETS
from ..training import TrainConfig


def _targets(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def add_extra_args(p: argparse.ArgumentParser) -> None:
    """Add issue 13's flags to the ``vitkit train`` parser."""
    d = TrainConfig
    g = p.add_argument_group("LoRA (parameter-efficient fine-tuning)")
    g.add_argument("--lora-rank", type=int, default=d.lora_rank,
                   help="train rank-R LoRA adapters and the head instead of the weights (0: off)")
    g.add_argument("--lora-alpha", type=float, default=d.lora_alpha, help="adapter scale alpha (update x alpha/R)")
    g.add_argument("--lora-dropout", type=float, default=d.lora_dropout, help="dropout on the adapters' input")
    g.add_argument("--lora-targets", type=_targets, default=d.lora_targets, metavar="LIST",
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


def extra_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig settings of issue 13's flags."""
    return {"lora_rank": args.lora_rank, "lora_alpha": args.lora_alpha, "lora_dropout": args.lora_dropout,
            "lora_targets": tuple(args.lora_targets), "labels": args.labels, "val_labels": args.val_labels,
            "hf_dataset": args.hf_dataset, "image_column": args.image_column, "label_column": args.label_column}


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
