"""`vitkit train` / `vitkit eval` as a user meets them, through a subprocess: an existing --out, Ctrl-C and resume,
which checkpoint eval reads, --img-size, the folder default model, wording, warnings under torchrun."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import vitkit
from test_train_common import TINY_ARGS
from vitkit.data.digits import load_digits_images
from vitkit.training import TrainConfig
from vitkit.training.checkpoint import load_state

QUICK = [*TINY_ARGS, "--no-plots", "--export-samples", "0", "--threads", "1"]


def _env(**extra: str) -> dict[str, str]:
    src = str(Path(vitkit.__file__).parents[1])
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
            **extra}


def vitkit_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vitkit", *args], env=env or _env(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three classes of 32-pixel digit photos, 40 each."""
    root = tmp_path_factory.mktemp("photos")
    images, labels = load_digits_images(32)
    counts = dict.fromkeys((0, 3, 7), 0)
    for img, label in zip(images, labels):
        if label in counts and counts[label] < 40:
            (root / f"class{label}").mkdir(exist_ok=True)
            img.save(root / f"class{label}" / f"{counts[label]}.png")
            counts[label] += 1
    return root


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """One epoch of the tiny model on the digits at --img-size 48."""
    out = tmp_path_factory.mktemp("run")
    proc = vitkit_cli("train", *QUICK, "--epochs", "1", "--img-size", "48", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_one_epoch_at_another_image_size_is_said_in_good_english(finished):
    out, proc = finished
    assert "at 48x48 pixels" in proc.stdout and "1 epoch x 44 steps" in proc.stdout
    assert "1 epochs" not in proc.stdout and "(100.0%," in proc.stdout
    assert json.loads((out / "best" / "config.json").read_text())["config"]["img_size"] in ([48, 48], 48)


def test_an_existing_run_is_refused_unless_overwrite_or_resume(finished, tmp_path: Path):
    out = tmp_path / "copy"
    shutil.copytree(finished[0], out)
    before = (out / "report.json").read_text()
    refused = vitkit_cli("train", *QUICK, "--epochs", "1", "--img-size", "48", "--out", str(out))
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "already holds a training run" in refused.stderr and "--overwrite" in refused.stderr
    assert "--resume" in refused.stderr and (out / "report.json").read_text() == before
    replaced = vitkit_cli("train", *QUICK, "--epochs", "1", "--out", str(out), "--max-steps", "2", "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert load_state(out / "checkpoint.pt")["progress"]["step"] == 2  # started afresh at 32 pixels
    assert not (out / "best").exists() and json.loads((out / "report.json").read_text())["completed"] is False


def test_eval_of_a_run_says_which_checkpoint_it_reads(finished):
    out, _ = finished
    best = vitkit_cli("eval", "--run", str(out))
    assert best.returncode == 0 and f"{out / 'best'}: the best (epoch 1 of 1) checkpoint" in best.stdout


def test_ctrl_c_in_the_first_epoch_saves_and_prints_the_command_that_resumes(tmp_path: Path):
    out = tmp_path / "run"
    # the full vit_digits: an epoch takes over a second, so the signal lands inside the first one
    args = ["--model", "vit_digits", "--threads", "1", "--no-plots", "--export-samples", "0", "--epochs", "2",
            "--deterministic", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "vitkit", "train", *args], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if " -> " in line:  # the start line: training begins
                break
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    state = load_state(out / "checkpoint.pt")
    epoch, step = state["progress"]["epoch"], state["progress"]["step"]
    assert epoch == 0 and 0 < step < 44, "the interrupt should land in the first epoch"
    message = err.strip().splitlines()[-1]
    assert f"interrupted at epoch 1, step {step}; training state written to {out / 'checkpoint.pt'}" in message
    command = shlex.split(message.split("Continue with: ")[1])
    assert command[:2] == ["vitkit", "train"] and command[-1] == "--resume"
    resumed = vitkit_cli(*command[1:], "--max-steps", str(step + 1))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at epoch 1, step {step}" in resumed.stdout
    assert load_state(out / "checkpoint.pt")["progress"]["step"] == step + 1


def test_a_photo_folder_gets_a_photo_model_and_tiny_shares_are_not_zero(folder: Path, tmp_path: Path):
    assert TrainConfig(data=str(folder)).resolved().network.model == "vit_small_patch16_224"
    args = ["train", str(folder), "--img-size", "32", "--linear-probe", "--batch-size", "128", "--max-steps", "1",
            "--threads", "1", "--workers", "0", "--no-plots"]
    proc = vitkit_cli(*args, "--out", str(tmp_path / "a"))
    assert proc.returncode == 0, proc.stderr
    assert "model vit_small_patch16_224 (the default for an image folder; choose with --model)" in proc.stdout
    assert "1,155 trainable (<0.01%," in proc.stdout  # a 3-class head on ViT-S/16: 384 x 3 + 3 of 21.7M
    # under torchrun the other ranks keep quiet: one warning per run, not one per process
    assert proc.stderr.count("larger than the training split") == 1
    other = vitkit_cli(*args, "--out", str(tmp_path / "b"), env=_env(RANK="1"))
    assert other.returncode == 0 and "larger than the training split" not in other.stderr
