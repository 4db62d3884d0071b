"""Validation of the settings that issue 13 added to TrainConfig (LoRA, data sources, multi-label,
tracking, strategy), kept apart from config.py's own checks. ``validate_options`` runs inside
``TrainConfig.validate``, so a bad value fails before any data or model is loaded."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..lora import LoRAConfig


def _fail(name: str, value: Any, expected: str) -> None:
    raise ConfigError(f"Training setting {name}={value!r} is not allowed: expected {expected}.")


def lora_config(cfg: Any) -> LoRAConfig | None:
    """The run's LoRAConfig (None when ``lora_rank`` is 0: LoRA off), validated with the flags' names."""
    if not cfg.lora_rank:
        return None
    try:
        return LoRAConfig(rank=cfg.lora_rank, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                          targets=tuple(cfg.lora_targets))
    except ConfigError as exc:
        raise ConfigError(f"{exc} (set by --lora-rank/--lora-alpha/--lora-dropout/--lora-targets)") from None


def _check_lora(cfg: Any) -> None:
    if not isinstance(cfg.lora_rank, int) or isinstance(cfg.lora_rank, bool) or cfg.lora_rank < 0:
        _fail("lora_rank", cfg.lora_rank, "0 (LoRA off) or a positive rank such as 8")
    if lora_config(cfg) is not None and cfg.freeze != "none":
        raise ConfigError(f"--lora-rank trains only the adapters and the head; --freeze {cfg.freeze} cannot be "
                          f"combined with it. Drop one of the two.")


def validate_options(cfg: Any) -> None:
    """Raise ConfigError naming the first issue-13 setting that is not allowed."""
    _check_lora(cfg)
