"""An exponential moving average (EMA) of a model's weights, kept beside training and evaluated each epoch.

After optimizer step ``t`` (1, 2, ...): ``ema = d_t * ema + (1 - d_t) * weights`` with the warm-up
``d_t = min(decay, (1 + t) / (10 + t))`` (as in TensorFlow's ExponentialMovingAverage with num_updates): early
on the average follows the weights closely, so it is not dominated by the random initialisation. Floating
tensors are averaged; integer buffers are copied. The state (average and update count) is saved in the
training checkpoint, so a resumed run continues the same average bit for bit.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, keyword


class ModelEma:
    """``ModelEma(model, decay)``; call ``update(model)`` after each optimizer step; ``module`` is the average."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def decay_at(self, t: int) -> float:
        """The decay of update ``t`` (1-based), warm-up included."""
        return min(self.decay, (1.0 + t) / (10.0 + t))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay_at(self.updates)
        averaged, current = self.module.state_dict(), model.state_dict()
        floats = [(averaged[k], v.detach()) for k, v in current.items() if averaged[k].is_floating_point()]
        if floats:
            ema_t, new_t = zip(*floats)
            torch._foreach_lerp_(list(ema_t), list(new_t), 1.0 - d)  # ema += (1 - d) * (new - ema)
        for k, v in current.items():
            if not averaged[k].is_floating_point():
                averaged[k].copy_(v)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or "module" not in state:
            ema = keyword("ema")
            raise CheckpointError(f"The checkpoint's EMA state is missing or damaged; resume without {ema}, or "
                                  f"start afresh.", hints=(ema,))
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
