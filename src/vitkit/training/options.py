"""Validation of TrainConfig's LoRA, data-source, multi-label, tracking and strategy settings.
``validate_options`` runs inside ``TrainConfig.validate``, so a bad value fails before any data or model is loaded."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..choices import MULTILABEL_LOSSES as LOSSES
from ..errors import ConfigError, keyword
from .tracking import check_report_to

if TYPE_CHECKING:
    from ..lora import LoRAConfig

STRATEGIES = ("ddp", "fsdp")  # training/fsdp.py


def _fail(name: str, value: Any, expected: str) -> None:
    raise ConfigError(f"Training setting {name}={value!r} is not allowed: expected {expected}.")


def lora_config(cfg: Any) -> LoRAConfig | None:
    """The run's LoRAConfig (None when ``lora_rank`` is 0: LoRA off), validated with the flags' names."""
    if not cfg.lora_rank:
        return None
    from ..lora import LoRAConfig  # torch: imported when LoRA is asked for, not to validate a config

    try:
        return LoRAConfig(rank=cfg.lora_rank, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                          targets=tuple(cfg.lora_targets))
    except ConfigError as exc:
        hints = tuple(keyword(name) for name in ("lora_rank", "lora_alpha", "lora_dropout", "lora_targets"))
        raise ConfigError(f"{exc} (set by {'/'.join(map(str, hints))})", hints=hints) from None


def _check_lora(cfg: Any) -> None:
    if not isinstance(cfg.lora_rank, int) or isinstance(cfg.lora_rank, bool) or cfg.lora_rank < 0:
        _fail("lora_rank", cfg.lora_rank, "0 (LoRA off) or a positive rank such as 8")
    if lora_config(cfg) is not None and cfg.freeze != "none":
        hints = keyword("lora_rank", cfg.lora_rank), keyword("freeze", cfg.freeze)
        raise ConfigError(f"{hints[0]} trains only the adapters and the head; {hints[1]} cannot be combined with "
                          f"it. Drop one of the two.", hints=hints)


def _check_sources(cfg: Any) -> None:
    given = [name for name, value in (("data", cfg.data), ("labels", cfg.labels), ("hf_dataset", cfg.hf_dataset))
             if value is not None and not (name == "data" and value == "digits")]
    if len(given) > 1:
        hints = keyword("labels"), keyword("hf_dataset")
        raise ConfigError(f"Give one data source, not {' and '.join(given)}: an image folder (data), a label file "
                          f"({hints[0]}) or a saved Hugging Face dataset ({hints[1]}).", hints=hints)
    if cfg.val_labels and not cfg.labels:
        hints = keyword("val_labels"), keyword("labels")
        raise ConfigError(f"{hints[0]} lists the validation images of a {hints[1]} file; give {hints[1]} too.",
                          hints=hints)
    if (cfg.image_column or cfg.label_column) and not cfg.hf_dataset:
        hints = keyword("image_column"), keyword("label_column"), keyword("hf_dataset")
        raise ConfigError(f"{hints[0]}/{hints[1]} name columns of a {hints[2]}; give {hints[2]} too.", hints=hints)


def validate_options(cfg: Any) -> None:
    """Raise ConfigError naming the first LoRA, source, multi-label, tracking or strategy setting not allowed."""
    _check_lora(cfg)
    _check_sources(cfg)
    if cfg.multilabel_loss not in LOSSES:
        _fail("multilabel_loss", cfg.multilabel_loss, f"one of {', '.join(LOSSES)}")
    if not 0.0 < cfg.threshold < 1.0:
        _fail("threshold", cfg.threshold, "a score threshold in (0, 1)")
    check_report_to(cfg.report_to)
    if cfg.strategy not in STRATEGIES:
        _fail("strategy", cfg.strategy, f"one of {', '.join(STRATEGIES)}")
