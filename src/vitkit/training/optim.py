"""What trains and how: freezing, AdamW parameter groups with layer-wise decay, warmup + cosine."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, keyword
from .config import parse_freeze

HEAD_PREFIXES = ("head.", "head_dist.")
# Parameters after the blocks (final norm, pooling, pre-logits, heads) sit in the top layer
TOP_PREFIXES = ("norm.", "fc_norm.", "attn_pool.", "pre_logits.", *HEAD_PREFIXES)
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.")


def apply_freeze(model: nn.Module, spec: str) -> tuple[int, int]:
    """Freeze per ``spec`` ('none', 'backbone', 'blocks:N'); returns (trainable, total) parameter counts.

    'backbone' trains only the head(s) (linear probing); 'blocks:N' trains the last N blocks, the
    final norm and pooling, and the head(s).
    """
    keep_blocks = parse_freeze(spec)
    depth = len(model.blocks)
    if keep_blocks is not None and keep_blocks > depth:
        freeze = keyword("freeze", spec)
        raise ConfigError(f"{freeze} asks for more blocks than the model has ({depth}); use blocks:0..{depth}, "
                          f"'backbone' or 'none'.", hints=(freeze,))
    for name, param in model.named_parameters():
        param.requires_grad_(keep_blocks is None or _trains(name, keep_blocks, depth))
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def _trains(name: str, keep_blocks: int, depth: int) -> bool:
    if name.startswith(HEAD_PREFIXES):
        return True
    if keep_blocks == 0:
        return False
    block = _BLOCK_RE.match(name)
    if block:
        return int(block.group(1)) >= depth - keep_blocks
    return name.startswith(TOP_PREFIXES)


def layer_id(name: str, depth: int) -> int:
    """0 for the embeddings, i + 1 for block i, depth + 1 for everything after the blocks."""
    block = _BLOCK_RE.match(name)
    if block:
        return int(block.group(1)) + 1
    return depth + 1 if name.startswith(TOP_PREFIXES) else 0


def param_groups(model: nn.Module, *, weight_decay: float, layer_decay: float = 1.0) -> list[dict[str, Any]]:
    """AdamW groups: no decay on norms, biases, position embeddings and special tokens; learning rates
    scaled by ``layer_decay ** (depth + 1 - layer)`` (layer-wise decay, 1.0: off). Frozen parameters are left out.
    """
    depth = len(model.blocks)
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim <= 1 or name in skip or name.endswith(".bias")
        layer = layer_id(name, depth) if layer_decay < 1.0 else depth + 1
        group = groups.setdefault((layer, no_decay), {
            "params": [], "weight_decay": 0.0 if no_decay else weight_decay,
            "lr_scale": layer_decay ** (depth + 1 - layer), "layer": layer})
        group["params"].append(param)
    if not groups:
        freeze = keyword("freeze")
        raise ConfigError(f"No parameter is left to train (everything is frozen); use {freeze} 'none', 'backbone' "
                          f"or 'blocks:N' with N >= 1.", hints=(freeze,))
    return [groups[k] for k in sorted(groups)]


def build_optimizer(model: nn.Module, *, lr: float, weight_decay: float, layer_decay: float) -> torch.optim.AdamW:
    groups = param_groups(model, weight_decay=weight_decay, layer_decay=layer_decay)
    for g in groups:
        g["lr"] = lr * g["lr_scale"]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))


@dataclass
class WarmupCosine:
    """Linear warmup from 0 to ``base_lr`` over ``warmup_steps``, then cosine down to ``min_lr``.

    Stepped once per optimizer step; each group's rate is scaled by its ``lr_scale`` (layer decay).
    """

    optimizer: torch.optim.Optimizer
    base_lr: float
    total_steps: int
    warmup_steps: int = 0
    min_lr: float = 0.0
    step_count: int = 0

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1.0 + math.cos(math.pi * progress))

    def apply(self) -> float:
        """Set the rate of the coming step on every group; returns the unscaled rate."""
        lr = self.lr_at(self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def step(self) -> None:
        self.step_count += 1

    def state_dict(self) -> dict[str, Any]:
        return {"base_lr": self.base_lr, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "min_lr": self.min_lr, "step_count": self.step_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step_count"])
