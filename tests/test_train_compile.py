"""`train --compile`: the training step runs the torch.compile'd model, with the loss curve of eager mode.

The comparison with a real compile is `slow` (a cold compile of even the tiny ViT, forward and backward, takes
~30 s on 2 cores); the default run checks the wiring with a stand-in for torch.compile.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from test_train_common import TINY, one_thread  # noqa: F401 (fixture)
from vitkit.training import train

pytestmark = pytest.mark.usefixtures("one_thread")


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_compile_wraps_the_model_of_the_training_step_only(tmp_path: Path, monkeypatch):
    compiled: list[torch.nn.Module] = []
    calls = {"train": 0, "eval": 0}

    class Spy(torch.nn.Module):
        def __init__(self, module: torch.nn.Module) -> None:
            super().__init__()
            self.module = module

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls["train" if self.module.training else "eval"] += 1
            return self.module(x)

    def fake_compile(module: torch.nn.Module, **kwargs) -> torch.nn.Module:
        compiled.append(module)
        return Spy(module)

    monkeypatch.setattr(torch, "compile", fake_compile)
    result = train(**TINY, epochs=1, out=str(tmp_path), compile=True)
    assert len(compiled) == 1 and type(compiled[0]).__name__ == "VisionTransformer"
    assert calls == {"train": result.report["steps"], "eval": 0}  # every step, no validation pass


@pytest.mark.slow
def test_compiled_training_follows_the_eager_loss_curve(tmp_path: Path):
    # Inductor fuses and reorders float operations, so the runs differ by rounding, which training amplifies:
    # measured, epoch 1's losses agree to 4e-7 (relative), epoch 2's to 1.1e-3 and the weights to 2.7e-3.
    # Stated tolerances: 1e-5 after one epoch, 5e-3 after two; weights 1e-2.
    eager = train(**TINY, epochs=2, out=str(tmp_path / "eager"), deterministic=True)
    compiled = train(**TINY, epochs=2, out=str(tmp_path / "compiled"), deterministic=True, compile=True)
    assert eager.report["steps"] == compiled.report["steps"] == 88
    for tolerance, a, b in zip((1e-5, 5e-3), _rows(tmp_path / "eager"), _rows(tmp_path / "compiled")):
        for key in ("train_loss", "val_loss"):
            assert b[key] == pytest.approx(a[key], rel=tolerance), (key, a["epoch"])
    state_a = torch.load(tmp_path / "eager" / "checkpoint.pt", weights_only=True)["model"]
    state_b = torch.load(tmp_path / "compiled" / "checkpoint.pt", weights_only=True)["model"]
    for k in state_a:
        torch.testing.assert_close(state_b[k], state_a[k], atol=1e-2, rtol=0, msg=k)
