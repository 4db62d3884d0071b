"""EMA of the weights: the warm-up formula, updates equal to the hand-computed average, runs that report it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from test_train_common import TINY, one_thread, weights  # noqa: F401 (fixture)
from vitkit.cli import main
from vitkit.errors import ConfigError
from vitkit.training import train
from vitkit.training.checkpoint import load_state
from vitkit.training.ema import ModelEma

pytestmark = pytest.mark.usefixtures("one_thread")


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.register_buffer("count", torch.tensor(0))


def test_the_average_follows_the_warm_up_formula_and_copies_integer_buffers():
    model = Tiny()
    ema = ModelEma(model, decay=0.9)
    assert [ema.decay_at(t) for t in (1, 2, 100)] == [2 / 11, 3 / 12, 0.9]
    expected = model.lin.weight.detach().clone()
    for t in range(1, 4):
        with torch.no_grad():
            model.lin.weight.add_(1.0)
            model.count += 1
        ema.update(model)
        d = min(0.9, (1 + t) / (10 + t))
        expected = d * expected + (1 - d) * model.lin.weight.detach()
    torch.testing.assert_close(ema.module.lin.weight, expected, atol=1e-6, rtol=0)
    assert int(ema.module.count) == 3 and ema.updates == 3
    assert not any(p.requires_grad for p in ema.module.parameters()) and not ema.module.training
    assert model.lin.weight.requires_grad  # the caller's model is untouched
    again = ModelEma(Tiny(), decay=0.9)
    again.load_state_dict(ema.state_dict())
    assert again.updates == 3 and torch.equal(again.module.lin.weight, ema.module.lin.weight)


def test_a_run_with_ema_validates_saves_and_reports_both(tmp_path: Path, capsys: pytest.CaptureFixture):
    result = train(**TINY, epochs=2, out=str(tmp_path), ema=0.95)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all({"ema_val_top1", "ema_val_loss", "ema_val_top5"} <= set(r) for r in rows)
    r = result.report
    assert r["best_ema_val_top1"] == max(row["ema_val_top1"] for row in rows)
    assert r["best_weights"] == ("ema" if r["best_ema_val_top1"] > r["best_val_top1"] else "raw")
    state = load_state(tmp_path / "checkpoint.pt")
    assert state["ema"]["updates"] == r["steps"]
    ema_w, raw_w = weights(tmp_path / "ema"), weights(tmp_path / "last")
    assert all(torch.equal(ema_w[k], state["ema"]["module"][k]) for k in ema_w)
    assert not torch.equal(ema_w["head.weight"], raw_w["head.weight"])
    assert (tmp_path / "best_ema" / "config.json").is_file()
    assert main(["eval", "--run", str(tmp_path), "--checkpoint", "ema"]) == 0
    assert f"{tmp_path / 'ema'}: the ema (epoch 2 of 2) checkpoint" in capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"ema: checkpoint 0.95, now None"):
        train(**TINY, epochs=2, out=str(tmp_path), resume="auto")  # a resume keeps the average it had


def test_a_decay_outside_0_1_is_refused():
    with pytest.raises(ConfigError, match="ema=1.5 is not allowed"):
        train(**TINY, epochs=1, ema=1.5)
