"""Kill tests: training SIGKILLed at seeded random moments and resumed each time ends bit-identical (raw and EMA
weights, training state, metrics) to an uninterrupted deterministic run, and no reader ever sees a half-written file.

The default run kills a tiny 2-epoch run 3 times; ``-m slow`` runs a longer chain with augmentation, mixup and plots.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import vitkit
from test_train_common import TINY, TINY_ARGS, one_thread, weights  # noqa: F401 (fixture)
from vitkit.training import train
from vitkit.training.checkpoint import load_state

pytestmark = pytest.mark.usefixtures("one_thread")
TIMING = ("images_per_sec", "epoch_time_s")
EXPORTS = ("best", "last", "ema", "best_ema")


def _env() -> dict[str, str]:
    src = str(Path(vitkit.__file__).parents[1])
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _start_and_kill(cmd: list[str], delay: float) -> bool:
    """Run ``cmd``; ``delay`` seconds after training starts, SIGKILL it. True when it was killed (not finished)."""
    with subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as proc:
        for line in proc.stdout:
            if " -> " in line:  # the start line: the training loop begins
                break
        time.sleep(delay)
        killed = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    return killed


def _assert_whole_files(out: Path) -> None:
    """Every file a reader can open is complete: it parses or loads (half-written ones live under hidden names)."""
    if (out / "checkpoint.pt").exists():
        load_state(out / "checkpoint.pt")
    if (out / "metrics.jsonl").exists():
        [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    if (out / "metrics.csv").exists():
        list(csv.DictReader((out / "metrics.csv").open()))
    if (out / "report.json").exists():
        json.loads((out / "report.json").read_text())
    for name in EXPORTS:
        if (out / name).exists():
            vitkit.from_pretrained(out / name)
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.read_bytes()[-8:-4] == b"IEND", png


def _rows(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _resuming(cmd: list[str], out: Path) -> list[str]:
    """``cmd`` with --resume once a killed run has left a training state to continue (--resume needs one)."""
    return [*cmd, "--resume"] if (out / "checkpoint.pt").exists() else cmd


def _kill_chain(tmp_path: Path, extra: list[str], settings: dict, kills: int, seed: int) -> None:
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    reference = train(**{**TINY, **settings}, epochs=2, deterministic=True, out=str(clean), save_every_steps=5)
    span = reference.report["wall_time_s"]
    rng = random.Random(seed)
    cmd = [sys.executable, "-m", "vitkit", "train", *TINY_ARGS, *extra, "--epochs", "2", "--deterministic",
           "--save-every-steps", "5", "--threads", "1", "--export-samples", "0", "--out", str(killed)]
    landed = 0
    for _ in range(kills):  # each run resumes the last; delays of ~0.75 x span / kills spread the kills over the run
        landed += _start_and_kill(_resuming(cmd, killed), rng.uniform(0.0, 1.5 * span / kills))
        _assert_whole_files(killed)
    assert landed >= 1, "no kill landed inside a run: the runs are faster than the reference"
    final = subprocess.run(_resuming(cmd, killed), env=_env(), capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    _assert_whole_files(killed)
    for name in ("last", "ema"):
        a, b = weights(clean / name), weights(killed / name)
        assert all(torch.equal(a[k], b[k]) for k in a), f"{name}: the resumed weights differ"
    a, b = load_state(clean / "checkpoint.pt"), load_state(killed / "checkpoint.pt")
    assert all(torch.equal(a["ema"]["module"][k], b["ema"]["module"][k]) for k in a["ema"]["module"])
    assert a["ema"]["updates"] == b["ema"]["updates"] == 2 * 44
    assert _rows(clean) == _rows(killed)
    assert not list(killed.glob(".*")), "no temporary file or folder may be left behind"
    assert sorted(p.name for p in killed.iterdir()) == sorted(p.name for p in clean.iterdir())


def test_killed_three_times_at_random_moments_ends_bit_identical_with_ema(tmp_path: Path):
    _kill_chain(tmp_path, ["--ema", "0.9", "--no-plots"], dict(ema=0.9), kills=3, seed=0)


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("seed", [1, 2])
def test_killed_many_times_with_augmentation_mixup_and_plots_ends_bit_identical(tmp_path: Path, seed: int):
    extra = ["--ema", "0.99", "--aug", "trivial", "--mixup", "0.2", "--crop-scale", "0.5", "1.0"]
    settings = dict(ema=0.99, aug="trivial", mixup=0.2, crop_scale=(0.5, 1.0), plots=True)
    _kill_chain(tmp_path, extra, settings, kills=10, seed=seed)
