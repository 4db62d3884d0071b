"""Processes: two gloo ranks under torchrun equal one process on the same global batch; a killed run resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import vitkit
from test_train_common import STEPS_PER_EPOCH, TINY, TINY_ARGS, one_thread, weights  # noqa: F401 (fixture)
from vitkit.training import train
from vitkit.training.checkpoint import load_state

DETERMINISTIC_ARGS = [*TINY_ARGS, "--no-plots", "--export-samples", "0", "--deterministic"]
DETERMINISTIC = dict(TINY, deterministic=True)
pytestmark = pytest.mark.usefixtures("one_thread")


def _env() -> dict[str, str]:
    src = str(Path(vitkit.__file__).parents[1])
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_two_gloo_processes_match_one_process_on_the_same_global_batch(tmp_path: Path):
    ddp_out, single_out = tmp_path / "ddp", tmp_path / "single"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "vitkit",
           "train", *DETERMINISTIC_ARGS, "--epochs", "1", "--out", str(ddp_out)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("epoch   1") == 1  # only rank 0 prints
    single = train(**DETERMINISTIC, epochs=1, out=str(single_out))
    ddp = json.loads((ddp_out / "report.json").read_text())
    assert ddp["summary"]["world_size"] == 2 and single.report["summary"]["world_size"] == 1
    assert ddp["steps"] == single.report["steps"] == STEPS_PER_EPOCH
    # The same samples per step; only the order of float sums differs (gradients averaged over ranks),
    # which 44 AdamW steps amplify to ~2e-4 at most: allow 2e-3.
    a, b = weights(ddp_out / "last"), weights(single_out / "last")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-3, rtol=1e-3, msg=k)
    d_row = json.loads((ddp_out / "metrics.jsonl").read_text().splitlines()[-1])
    s_row = json.loads((single_out / "metrics.jsonl").read_text().splitlines()[-1])
    assert d_row["val_images"] == s_row["val_images"] == 359  # the validation shards add up to the whole split
    for key in ("train_loss", "val_loss"):
        assert d_row[key] == pytest.approx(s_row[key], abs=2e-3)
    for key in ("val_top1", "val_top5"):
        assert d_row[key] == pytest.approx(s_row[key], abs=2 / 359)


def test_a_killed_run_resumes_where_it_stopped_and_ends_like_an_uninterrupted_one(tmp_path: Path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    cmd = [sys.executable, "-m", "vitkit", "train", *DETERMINISTIC_ARGS, "--epochs", "2", "--save-every-steps", "5",
           "--out", str(killed)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    state_file = killed / "checkpoint.pt"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if state_file.is_file() and load_state(state_file)["progress"]["step"] >= 10:
                break
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    stopped_at = load_state(state_file)["progress"]["step"]
    assert 10 <= stopped_at < 2 * STEPS_PER_EPOCH, "the run should have been killed part-way"
    resumed = train(**DETERMINISTIC, epochs=2, out=str(killed), resume="auto")
    assert resumed.completed and resumed.report["steps"] == 2 * STEPS_PER_EPOCH
    train(**DETERMINISTIC, epochs=2, out=str(clean))
    a, b = weights(killed / "last"), weights(clean / "last")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not list(killed.glob(".*.tmp")), "no temporary file may be left behind"
