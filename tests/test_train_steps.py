"""The training step: no host sync per micro-step, no rank-local skip, named epoch sums, resume settings checked."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from test_train_common import TINY, one_thread  # noqa: F401 (fixture)
from vitkit.data.datasets import LabelledImages, TransformedImages
from vitkit.errors import ConfigError, DataError
from vitkit.training import train
from vitkit.training.checkpoint import load_state

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_loss_is_read_on_the_host_once_per_logging_interval(tmp_path: Path, monkeypatch):
    reads: list[str] = []
    real_float, real_item = torch.Tensor.__float__, torch.Tensor.item

    def caller() -> str:
        return sys._getframe(2).f_globals.get("__name__", "")

    def spy_float(self):
        reads.append(caller())
        return real_float(self)

    def spy_item(self):
        reads.append(caller())
        return real_item(self)

    monkeypatch.setattr(torch.Tensor, "__float__", spy_float)
    monkeypatch.setattr(torch.Tensor, "item", spy_item)
    result = train(**TINY, epochs=1, out=str(tmp_path), accum_steps=2, max_steps=20, log_every=10)
    assert result.report["steps"] == 20
    from_training = [r for r in reads if r.startswith("vitkit.training")]
    # per interval: the non-finite check and the progress bar (2 x 2), plus the check before the final save;
    # reading it every micro-step would be 40
    assert len(from_training) <= 6, from_training


def test_a_training_sample_is_never_missing_however_many_neighbours_fail():
    good = Image.new("RGB", (4, 4))
    items: list = [Path("/no/such/image.png")] * 20 + [good]  # more unreadable neighbours than a short search
    data = TransformedImages(LabelledImages(items, list(range(21))), lambda img, e, i: torch.zeros(1),
                             replace_unreadable=True)
    x, label, skipped = data[(0, 0)]
    assert label == 20 and skipped == 1
    broken = TransformedImages(LabelledImages(items[:20], [0] * 20), lambda img, e, i: torch.zeros(1),
                               replace_unreadable=True)
    with pytest.raises(DataError, match="None of the 20 training images can be decoded"):
        broken[(0, 3)]


def test_epoch_sums_are_named_in_the_checkpoint(tmp_path: Path):
    train(**TINY, epochs=1, out=str(tmp_path), max_steps=3)
    stats = load_state(tmp_path / "checkpoint.pt")["progress"]["stats"]
    assert set(stats) == {"loss_sum", "images", "skipped", "seconds"}
    assert stats["images"] == 3 * 32 and stats["skipped"] == 0 and stats["seconds"] > 0
    assert 0 < float(stats["loss_sum"]) / stats["images"] < 5  # a cross-entropy over 10 classes starts near 2.3


@pytest.mark.parametrize("change, message", [
    (dict(epochs=3), "epochs: checkpoint 2, now 3"),
    (dict(lr=1e-3), "lr: checkpoint 0.003, now 0.001"),
    (dict(warmup_epochs=1.0), "warmup_epochs: checkpoint 0.5, now 1.0"),
    (dict(batch_size=64), "batch_size: checkpoint 32, now 64"),
    (dict(accum_steps=2), "accum_steps: checkpoint 1, now 2"),
])
def test_resume_refuses_settings_that_reshape_the_run(tmp_path: Path, change: dict, message: str):
    train(**TINY, epochs=2, out=str(tmp_path), max_steps=2)
    with pytest.raises(ConfigError, match=message) as info:
        train(**{**TINY, "epochs": 2, **change}, out=str(tmp_path), resume="auto")
    name = next(iter(change))  # a Python caller is told the keywords, not the command line's flags
    assert f"Resume with {name}=" in str(info.value) and f"weights='{tmp_path}/last'" in str(info.value)
    assert "--" not in str(info.value)
    # settings that do not change what is computed may differ
    resumed = train(**{**TINY, "eval_batch_size": 100}, epochs=2, out=str(tmp_path), resume="auto", log_every=7,
                    max_steps=4)
    assert resumed.report["steps"] == 4
