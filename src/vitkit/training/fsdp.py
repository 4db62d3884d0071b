"""``strategy='fsdp'``: sharded data parallel with torch's own FSDP2 (``torch.distributed.fsdp.fully_shard``).

Each block is its own FSDP unit and the model the root one, so a rank holds 1/N of the parameters, gradients
and optimizer state, and gathers one block's parameters at a time for its forward and backward. The
batches are the same global batches as with DDP (``GlobalBatchSampler``) and gradients are averaged the
same way, so a run's updates equal DDP's up to the order of float sums.

What changes for the rest of the loop, all here:

- the optimizer is built after sharding (its parameters are the sharded DTensors);
- the training state (``checkpoint.pt``) holds *full* (gathered) model and optimizer state dicts
  (``torch.distributed.checkpoint.state_dict`` with ``full_state_dict=True``): every rank takes part,
  rank 0 writes. The model part loads into a plain model without FSDP; resuming scatters it again;
- exports (``best/``, ``last/``) are plain VisionTransformers rebuilt on rank 0 from the gathered state;
- evaluation runs with every parameter gathered (``unsharded``), so ranks may run different numbers of
  forward passes over their validation shards (FSDP's per-block gathers are collectives that would
  otherwise have to match). It costs the memory of one full copy of the parameters, without gradients or
  optimizer state, during validation.

With one process there is nothing to shard: ``strategy='fsdp'`` then trains as a single process does.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ..lora import apply_lora
from ..weights import build
from .peft import check_lora_state

logger = logging.getLogger(__name__)


def _fsdp() -> Any:
    import torch.distributed.fsdp as fsdp

    return fsdp


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, _fsdp().FSDPModule)


def shard_model(model: nn.Module, cfg: Any, dist: Any) -> None:
    """Shard ``model`` IN PLACE across the process group when ``cfg.run.strategy`` is 'fsdp' (each block, then the
    root); a no-op for DDP or a single process. Call before the optimizer is built."""
    if cfg.run.strategy != "fsdp":
        return
    if not dist.initialized:
        logger.warning("the fsdp strategy shards a model across the processes of a torchrun launch; this is one "
                       "process, so it trains unsharded (launch with `torchrun --nproc_per_node=N -m vitkit train`)")
        return
    fully_shard = _fsdp().fully_shard
    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
    logger.info("FSDP2: %d blocks + root sharded over %d ranks", len(model.blocks), dist.world_size)


def _options(**kw: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def model_and_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``{'model': ..., 'optimizer': ...}`` for the training state; gathered (a collective) when sharded:
    rank 0 gets the full state dicts, other ranks empty ones."""
    if not is_sharded(model):
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer, options=_options(cpu_offload=True))
    return {"model": model_sd, "optimizer": optim_sd}


def load_model_and_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a training state's model and optimizer (full state dicts, scattered to the shards when sharded)."""
    check_lora_state(state, model)
    if not is_sharded(model):
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        return
    from torch.distributed.checkpoint.state_dict import set_state_dict

    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                   options=_options())


def full_model(model: nn.Module) -> nn.Module | None:
    """The model to export: ``model`` itself, or when sharded a plain VisionTransformer with the gathered
    weights on rank 0 (None on other ranks). A collective when sharded: every rank must call it."""
    if not is_sharded(model):
        return model
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state = get_model_state_dict(model, options=_options(cpu_offload=True))
    if not state:
        return None
    plain = build(model.config, pretrained_cfg=model.pretrained_cfg, model_name=model.model_name, device="meta")
    lora = getattr(model, "lora_config", None)
    if lora is not None:
        apply_lora(plain, lora)
    plain.load_state_dict(state, assign=True)
    return plain


@contextlib.contextmanager
def unsharded(model: nn.Module) -> Iterator[None]:
    """Every parameter gathered for the length of the block (no collectives in between), then sharded again."""
    if not is_sharded(model):
        yield
        return
    units = [m for m in model.modules() if is_sharded(m)]
    for m in units:
        m.set_reshard_after_forward(False, recurse=False)
        m.unshard()
    try:
        yield
    finally:
        for m in units:
            m.reshard()
            m.set_reshard_after_forward(True, recurse=False)
