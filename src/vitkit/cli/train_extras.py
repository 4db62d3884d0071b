"""Issue 13's `vitkit train` flags: LoRA (more to come), added to the train parser by ``add_extra_args``
and turned into TrainConfig settings by ``extra_settings``."""

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


def extra_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig settings of issue 13's flags."""
    return {"lora_rank": args.lora_rank, "lora_alpha": args.lora_alpha, "lora_dropout": args.lora_dropout,
            "lora_targets": tuple(args.lora_targets)}


def lora_line(summary: dict[str, Any]) -> str:
    """'LoRA r=8 alpha=16 on qkv,proj (12 linears)' for a run with adapters, else ''."""
    lora = summary.get("lora")
    if not lora:
        return ""
    return (f"LoRA r={lora['rank']} alpha={lora['alpha']:g} on {','.join(lora['targets'])} "
            f"({lora['adapted_linears']} linears)")
