"""--strategy fsdp (torch FSDP2 over 2 gloo CPU ranks) against DDP on the same global batch; its checkpoints are
full state dicts that load without FSDP; a killed FSDP run resumes (the full state scattered to the shards)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import vitkit
from test_train_common import STEPS_PER_EPOCH, TINY, weights
from test_train_dist import DETERMINISTIC_ARGS, _run_group
from vitkit.errors import ConfigError
from vitkit.training import train
from vitkit.training.checkpoint import load_state

# 359 validation images over 2 ranks: 180 and 179; batches of 179 give rank 0 two forward passes and rank 1 one
ARGS = [*DETERMINISTIC_ARGS, "--epochs", "2", "--eval-batch-size", "179"]


def _torchrun(*args: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "vitkit",
           "train", *ARGS, *args]
    proc = _run_group(cmd, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow  # two ranks, about 35 s; the default run keeps the one-rank refusals below and gloo DDP
def test_fsdp_on_two_ranks_matches_ddp_and_resumes(tmp_path: Path):
    fsdp, ddp = tmp_path / "fsdp", tmp_path / "ddp"
    _torchrun("--strategy", "fsdp", "--out", str(fsdp), "--max-steps", str(STEPS_PER_EPOCH + 6),
              "--report-to", "tensorboard")
    stopped = load_state(fsdp / "checkpoint.pt")
    assert stopped["progress"]["step"] == STEPS_PER_EPOCH + 6
    _torchrun("--strategy", "fsdp", "--out", str(fsdp), "--resume", "--report-to", "tensorboard")
    _torchrun("--out", str(ddp))
    report = json.loads((fsdp / "report.json").read_text())
    assert report["summary"]["strategy"] == "fsdp" and report["summary"]["world_size"] == 2
    assert report["steps"] == 2 * STEPS_PER_EPOCH
    # the training state holds plain full tensors (no DTensor shards) that a model without FSDP loads
    state = load_state(fsdp / "checkpoint.pt")
    plain = vitkit.from_pretrained(fsdp / "last")
    assert all(type(t) is torch.Tensor for t in state["model"].values())
    plain.load_state_dict(state["model"])  # strict: every key, full shapes
    assert set(state["optimizer"]["state"]) == {k for k, p in plain.named_parameters()}  # full Adam state by name
    # Same samples per step, gradients averaged the same way; only the order of float sums differs (reduce-scatter
    # vs all-reduce), which 88 AdamW steps amplify to ~2e-4 (measured): allow 2e-3, as DDP vs one process.
    a, b = weights(fsdp / "last"), weights(ddp / "last")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-3, rtol=1e-3, msg=k)
    f_rows = [json.loads(line) for line in (fsdp / "metrics.jsonl").read_text().splitlines()]
    d_rows = [json.loads(line) for line in (ddp / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_images"] for r in f_rows] == [r["val_images"] for r in d_rows] == [359, 359]
    for f, d in zip(f_rows, d_rows):
        assert f["val_loss"] == pytest.approx(d["val_loss"], abs=2e-3)
    # epoch 2's train_loss is not compared: a resumed run restores rank 0's partial loss sums on every rank (the
    # training state holds rank 0's Progress), so the interrupted epoch's mean is off by a few 1e-3, under DDP too
    assert f_rows[0]["train_loss"] == pytest.approx(d_rows[0]["train_loss"], abs=2e-3)
    # rank 0 alone reported: one event file per process that ran (two: the stopped run and the resumed one)
    assert len(list((fsdp / "tensorboard").glob("events.out.tfevents.*"))) == 2


def test_fsdp_alone_trains_unsharded_says_so_and_bad_strategies_fail(tmp_path: Path, caplog):
    with caplog.at_level("WARNING", logger="vitkit"):
        result = train(**TINY, epochs=1, max_steps=2, strategy="fsdp", out=str(tmp_path))
    assert any("trains unsharded" in r.getMessage() and "torchrun" in r.getMessage() for r in caplog.records)
    assert result.report["steps"] == 2 and "strategy" not in result.report["summary"]  # one process: nothing sharded
    with pytest.raises(ConfigError, match="strategy='zero3'.*ddp, fsdp"):
        train(**TINY, strategy="zero3", out=str(tmp_path))
