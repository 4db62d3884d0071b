"""Issue 13's additions to a run's summary, gathered in one place so the loop calls one function."""

from __future__ import annotations

from typing import Any

from .fsdp import is_sharded
from .peft import lora_summary


def summary_extras(trainer: Any) -> dict[str, Any]:
    """What issue 13's settings add to ``Trainer.summary()``: the LoRA adapters, the multi-label loss, FSDP."""
    multi = {"multi_label": True, "loss": trainer.cfg.multilabel_loss} if trainer.multi is not None else {}
    strategy = {"strategy": "fsdp"} if is_sharded(trainer.model) else {}
    return {**lora_summary(trainer.model), **multi, **strategy}
