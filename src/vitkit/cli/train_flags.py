"""The `vitkit train` / `vitkit eval` flags of the data sources (folder, label file, Hugging Face dataset;
multi-label), LoRA, the multi-process strategy and tracking, and the TrainConfig settings they give."""

from __future__ import annotations

import argparse
from typing import Any

from ..choices import LORA_TARGETS
from ..choices import MULTILABEL_LOSSES as LOSSES
from ..training.config import DATA_SETTINGS, TrainConfig
from ..training.options import STRATEGIES


def _names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def add_source_args(p: argparse.ArgumentParser, *, training: bool) -> None:
    """The data sources other than an image folder, and multi-label data (``training``: with the loss)."""
    d = TrainConfig
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
                   help="sigmoid outputs even on single-label data (one-element label sets)")
    if training:
        g.add_argument("--loss", choices=LOSSES, default=d.multilabel_loss,
                       help="multi-label loss: bce (with --label-smoothing) or asl (asymmetric loss)")
    g.add_argument("--threshold", type=float, default=d.threshold if training else None,
                   help="score threshold of the F1 metrics" + ("" if training else " (default: the run's, else 0.5)"))


def add_training_args(p: argparse.ArgumentParser) -> None:
    """LoRA, the multi-process strategy and experiment tracking (`vitkit train` only)."""
    d = TrainConfig
    g = p.add_argument_group("LoRA (parameter-efficient fine-tuning)")
    g.add_argument("--lora-rank", type=int, default=d.lora_rank,
                   help="train rank-R LoRA adapters and the head instead of the weights (0: off)")
    g.add_argument("--lora-alpha", type=float, default=d.lora_alpha, help="adapter scale alpha (update x alpha/R)")
    g.add_argument("--lora-dropout", type=float, default=d.lora_dropout, help="dropout on the adapters' input")
    g.add_argument("--lora-targets", type=_names, default=d.lora_targets, metavar="LIST",
                   help=f"comma-separated linears to adapt among {','.join(LORA_TARGETS)} "
                        f"(default: {','.join(d.lora_targets)})")
    g = p.add_argument_group("several processes (torchrun)")
    g.add_argument("--strategy", choices=STRATEGIES, default=d.strategy,
                   help="ddp: every rank holds the whole model; fsdp: parameters, gradients and optimizer state "
                        "sharded across ranks (torch FSDP2)")
    g = p.add_argument_group("experiment tracking")
    g.add_argument("--report-to", type=_names, default=d.report_to, metavar="LIST",
                   help="send each epoch's metrics row to these trackers too (comma-separated; built in: tensorboard, "
                        "written to OUT/tensorboard)")


def setting_flags(p: argparse.ArgumentParser) -> dict[str, str]:
    """TrainConfig field -> the flag that sets it, for the errors' hints (``keyword``): a flag stands for the field
    its destination names, and ``--loss`` / ``--set`` for the two that are named otherwise."""
    fields, renamed = set(TrainConfig.__dataclass_fields__), {"loss": "multilabel_loss", "set": "model_overrides"}
    named = {renamed.get(a.dest, a.dest): a.option_strings[-1] for a in p._actions if a.option_strings}
    return {field: flag for field, flag in named.items() if field in fields}


def source_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig settings of the data-source and multi-label flags (None: not given)."""
    return {name: getattr(args, name) for name in DATA_SETTINGS}


def training_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig settings of the flags ``add_source_args`` and ``add_training_args`` add to `vitkit train`."""
    return {**source_settings(args), "lora_rank": args.lora_rank, "lora_alpha": args.lora_alpha,
            "lora_dropout": args.lora_dropout, "lora_targets": tuple(args.lora_targets),
            "multilabel_loss": args.loss, "report_to": tuple(args.report_to), "strategy": args.strategy}
