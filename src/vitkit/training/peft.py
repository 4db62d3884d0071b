"""LoRA in a training run: adapters on the model before the optimiser sees it, merged models on export.

``vitkit.lora`` holds the adapters themselves; this module decides, from a TrainConfig, what trains
(``setup_trainable``: LoRA adapters + head, or ``--freeze``), and what a run writes: ``best/`` and
``last/`` hold plain models with the adapters folded in (``exportable``), so they save to every format
and load without vitkit.lora; ``OUT/adapters/{best,last}`` hold the adapters and head alone
(``save_run_adapters``), a few hundred KB that ``vitkit.lora.load_adapters`` puts back on the base model.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import CheckpointError, keyword
from ..lora import apply_lora, lora_layers, merge_lora, save_adapters, trainable_parameters
from .optim import apply_freeze

ADAPTERS_DIR = "adapters"


def setup_trainable(model: nn.Module, cfg: Any) -> tuple[int, int]:
    """Make the run's parameters trainable: LoRA adapters + head(s) when ``lora_rank`` > 0, else ``freeze``.

    LoRA freezes everything else itself, so ``apply_freeze`` (which sets every parameter's flag) must not
    run after it. Returns (trainable, total) parameter counts.
    """
    lcfg = cfg.lora.config()
    if lcfg is None:
        return apply_freeze(model, cfg.network.freeze)
    apply_lora(model, lcfg)
    counts = trainable_parameters(model)
    return counts["trainable"], counts["total"]


def lora_summary(model: nn.Module) -> dict[str, Any]:
    """``{'lora': {...}}`` for a run summary (empty for a model without adapters)."""
    cfg = getattr(model, "lora_config", None)
    return {"lora": {**cfg.to_dict(), "adapted_linears": len(lora_layers(model))}} if cfg is not None else {}


def exportable(model: nn.Module) -> nn.Module:
    """The model to save: ``model`` itself, or for an adapted model a merged plain copy (the run's model
    keeps its adapters and goes on training)."""
    if not lora_layers(model):
        return model
    plain = copy.deepcopy(model)
    return merge_lora(plain)


def save_run_adapters(model: nn.Module, export_path: Path) -> Path | None:
    """For an adapted model exported to ``OUT/<name>``, the adapters alone in ``OUT/adapters/<name>``."""
    if not lora_layers(model):
        return None
    return save_adapters(model, export_path.parent / ADAPTERS_DIR / export_path.name)


def check_lora_state(state: dict[str, Any], model: nn.Module, path: str = "The training checkpoint") -> None:
    """Fail clearly when a training state's LoRA adapters do not match the run's (on or off, rank, targets)."""
    saved = {k for k in state.get("model", {}) if ".lora_" in k}
    ours = {k for k in model.state_dict() if ".lora_" in k}
    cfg = state.get("train_config") or {}
    if saved != ours or (saved and cfg.get("lora_rank") != model.lora_config.rank):
        then = f"LoRA rank {cfg.get('lora_rank')} on {list(cfg.get('lora_targets') or [])}" if saved else "no LoRA"
        now = getattr(model, "lora_config", None)
        hints = keyword("lora_rank"), keyword("lora_targets"), keyword("out")
        raise CheckpointError(f"{path} was written by a run with {then}, but this run has "
                              f"{f'LoRA rank {now.rank} on {list(now.targets)}' if now else 'no LoRA'}. Resume with "
                              f"the same {hints[0]} and {hints[1]}, or use another {hints[2]} folder.", hints=hints)
