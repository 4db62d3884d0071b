"""One SIGTERM stops a training run even while it waits for data: a read that hangs (in the main process or in a
loader worker, during training or validation) ends at once, the state is saved at the step boundary it waited
at, and the saved state resumes to the run an uninterrupted one would have been."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

import vitkit
from vitkit.training.checkpoint import load_state

TINY = ["--model", "vit_digits", "--set", "patch_size=8", "--set", "embed_dim=32", "--set", "depth=1",
        "--set", "num_heads=1", "--img-size", "16", "--epochs", "2", "--batch-size", "4", "--threads", "1",
        "--no-plots", "--export-samples", "0", "--deterministic"]
STOPPED_WITHIN_S = 15
# `vitkit train` whose N-th image read (counted per process) writes MARKER and then hangs for an hour
HANGING = r"""
import os, sys, time
from pathlib import Path
import vitkit.data.datasets as D
marker, n = Path(sys.argv[1]), int(sys.argv[2])
real, count = D.load_image, [0]
def hanging(path, *a, **k):
    count[0] += 1
    if count[0] == n:
        marker.write_text(str(os.getpid()))
        time.sleep(3600)
    return real(path, *a, **k)
D.load_image = hanging
from vitkit.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _env() -> dict[str, str]:
    src = str(Path(vitkit.__file__).parents[1])
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two classes of 12 tiny images: 20 training images (5 steps of 4), 4 validation images."""
    root = tmp_path_factory.mktemp("stop") / "data"
    for c, green in (("a", 0), ("b", 200)):
        (root / c).mkdir(parents=True)
        for i in range(12):
            Image.new("RGB", (8, 8), (i * 20, green, 0)).save(root / c / f"{i}.png")
    return root


def _stop_while_hanging(data: Path, out: Path, read: int, workers: int) -> subprocess.CompletedProcess:
    marker = out.parent / f"{out.name}.hanging"
    args = ["train", str(data), *TINY, "--workers", str(workers), "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-c", HANGING, str(marker), str(read), *args], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), f"the read never hung: {proc.communicate()[1][-500:]}"
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        out_text, err = proc.communicate(timeout=STOPPED_WITHIN_S + 30)
        took = time.monotonic() - sent
    finally:  # a hanging loader worker holds the pipes too: end the whole group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert took < STOPPED_WITHIN_S, f"one SIGTERM took {took:.1f} s to stop the run"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out_text, err)


@pytest.mark.slow
def test_one_sigterm_stops_a_run_whose_data_read_hangs(data: Path, tmp_path: Path):
    out = tmp_path / "run"
    stopped = _stop_while_hanging(data, out, read=10, workers=0)  # the 3rd training batch's 2nd image
    assert stopped.returncode == 130, stopped.stderr[-800:]
    message = stopped.stderr.strip().splitlines()[-1]
    assert f"interrupted at epoch 1, step 2; training state written to {out / 'checkpoint.pt'}" in message
    progress = load_state(out / "checkpoint.pt")["progress"]
    assert (progress["epoch"], progress["batch"], progress["step"]) == (0, 2, 2)


@pytest.mark.slow
def test_one_sigterm_stops_a_run_whose_loader_worker_hangs(data: Path, tmp_path: Path):
    stopped = _stop_while_hanging(data, tmp_path / "run", read=10, workers=1)
    assert stopped.returncode == 130 and "training state written to" in stopped.stderr, stopped.stderr[-800:]


@pytest.mark.slow
def test_a_stop_during_a_hung_validation_read_resumes_to_the_uninterrupted_run(data: Path, tmp_path: Path):
    out = tmp_path / "run"
    stopped = _stop_while_hanging(data, out, read=23, workers=0)  # validation of epoch 1 (its 3rd image)
    assert stopped.returncode == 130, stopped.stderr[-800:]
    progress = load_state(out / "checkpoint.pt")["progress"]
    assert (progress["epoch"], progress["batch"], progress["step"]) == (0, 5, 5)  # epoch 1's steps, not validated
    run = [sys.executable, "-m", "vitkit", "train", str(data), *TINY, "--workers", "0"]
    resumed = subprocess.run([*run, "--out", str(out), "--resume"], env=_env(), capture_output=True, text=True,
                             timeout=120)
    whole = subprocess.run([*run, "--out", str(tmp_path / "whole")], env=_env(), capture_output=True, text=True,
                           timeout=120)
    assert resumed.returncode == 0 and whole.returncode == 0, resumed.stderr[-500:] + whole.stderr[-500:]
    a, b = load_state(out / "checkpoint.pt"), load_state(tmp_path / "whole" / "checkpoint.pt")
    assert a["progress"]["step"] == b["progress"]["step"] == 10
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
