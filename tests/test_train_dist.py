"""Processes: two gloo ranks under torchrun equal one process on the same global batch; a killed run resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch

import vitkit
from test_train_common import STEPS_PER_EPOCH, TINY, TINY_ARGS, one_thread, weights  # noqa: F401 (fixture)
from vitkit.training import loop, train
from vitkit.training.distributed import Dist

DETERMINISTIC_ARGS = [*TINY_ARGS, "--no-plots", "--export-samples", "0", "--deterministic"]
DETERMINISTIC = dict(TINY, deterministic=True)
pytestmark = pytest.mark.usefixtures("one_thread")


def _env() -> dict[str, str]:
    src = str(Path(vitkit.__file__).parents[1])
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _run_group(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own session; past ``timeout`` kill it with every process it started, then fail."""
    with subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"{cmd[:6]} ran past {timeout} s\nstdout:\n{out[-2000:]}\nstderr:\n{err[-2000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_two_gloo_processes_match_one_process_on_the_same_global_batch(tmp_path: Path):
    ddp_out, single_out = tmp_path / "ddp", tmp_path / "single"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "vitkit",
           "train", *DETERMINISTIC_ARGS, "--epochs", "1", "--out", str(ddp_out)]
    proc = _run_group(cmd, timeout=240)
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


def test_the_ddp_reducer_is_freed_before_the_process_group_is_destroyed(tmp_path: Path, monkeypatch):
    # The reducer holds the group; freed after destroy_process_group it is the group's last holder, and
    # ~ProcessGroupGloo joins gloo's worker threads under the GIL: a deadlock at exit that CI hit under load.
    torch.distributed.init_process_group("gloo", init_method=(tmp_path / "store").as_uri(), rank=0, world_size=1)
    reducers: list[weakref.ref] = []
    alive_at_destroy: list[bool] = []
    real_ddp, real_destroy = loop.DistributedDataParallel, torch.distributed.destroy_process_group

    def spy_ddp(*args, **kwargs):
        ddp = real_ddp(*args, **kwargs)
        reducers.append(weakref.ref(ddp.reducer))
        return ddp

    def spy_destroy(*args, **kwargs):
        alive_at_destroy.extend(r() is not None for r in reducers)
        real_destroy(*args, **kwargs)

    monkeypatch.setattr(loop, "DistributedDataParallel", spy_ddp)
    monkeypatch.setattr(torch.distributed, "destroy_process_group", spy_destroy)
    monkeypatch.setattr(Dist, "from_env", classmethod(lambda cls, device=None: cls(initialized=True)))
    try:
        result = train(**TINY, epochs=1, out=str(tmp_path / "run"))
    finally:
        if torch.distributed.is_initialized():
            real_destroy()
    assert result.completed and len(reducers) == 1, "the run should have trained through DDP"
    assert alive_at_destroy == [False], "the DDP reducer outlived the process group"
