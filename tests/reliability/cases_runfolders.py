"""Hostile run folders: a training run's checkpoint.pt with one part damaged (for ``train --resume``) and a
report.json with wrong settings (for ``eval --run``). Every case must end in one error line, exit 2.

One tiny run on the digits is trained when the first case is built; each case copies it and damages one
thing. All are bulk cases: the default run takes a few (a checkpoint case builds a run's data and model before
its refusal), ``--long`` all of them.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from corpus import Case

TINY_MODEL = {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 1}
SETTINGS = ["--model", "vit_digits", *(a for k, v in TINY_MODEL.items() for a in ("--set", f"{k}={v}")),
            "--epochs", "2", "--batch-size", "64", "--eval-batch-size", "512", "--export-samples", "0",
            "--no-plots", "--threads", "1"]


def _base(root: Path) -> Path:
    """A finished first epoch of a 2-epoch run (best/, last/, checkpoint.pt, report.json), made once."""
    base = root / "run-base"
    if not (base / "report.json").exists():
        from vitkit.cli import main

        assert main(["train", *SETTINGS, "--max-steps", "23", "--out", str(base)]) == 0
    return base


def _state_case(root: Path, name: str, damage: Callable[[dict[str, Any]], None]) -> Callable[[], dict[str, Any]]:
    def make() -> dict[str, Any]:
        run = root / f"run-{name}"
        shutil.copytree(_base(root), run, dirs_exist_ok=True)
        state = torch.load(run / "checkpoint.pt", weights_only=True)
        damage(state)
        torch.save(state, run / "checkpoint.pt")
        return {"argv": ["train", *SETTINGS, "--out", str(run), "--resume"]}
    return make


def _report_case(root: Path, name: str, config: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    def make() -> dict[str, Any]:
        run = root / f"run-{name}"
        shutil.copytree(_base(root), run, dirs_exist_ok=True)
        report = json.loads((run / "report.json").read_text())
        report["config"].update(config)
        (run / "report.json").write_text(json.dumps(report))
        return {"argv": ["eval", "--run", str(run), "--checkpoint", "last"]}
    return make


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def damage(state: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = state
        for key in parents:
            node = node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value(node[last]) if callable(value) else value
    return damage


_DELETE = object()

STATE_DAMAGE: dict[str, Callable[[dict[str, Any]], None]] = {
    "rng-missing": _set("rng", _DELETE),
    "rng-torch-floats": _set("rng.torch", torch.zeros(3)),
    "rng-numpy-short": _set("rng.numpy.keys", torch.zeros(5, dtype=torch.int64)),
    "rng-python-string": _set("rng.python.state", "x"),
    "progress-missing": _set("progress", _DELETE),
    "progress-batch-negative": _set("progress.batch", -5),
    "progress-epoch-string": _set("progress.epoch", "x"),
    "progress-history-string": _set("progress.history", "x"),
    "progress-step-huge": _set("progress.step", 10**15),
    "stats-empty": _set("progress.stats", {}),
    "scheduler-empty": _set("scheduler", {}),
    "scheduler-none": _set("scheduler", None),
    "optimizer-empty": _set("optimizer", {}),
    "optimizer-no-groups": _set("optimizer.param_groups", []),
    "model-shape": _set("model.cls_token", lambda t: torch.zeros(1, 2, 3)),
    "model-nan": _set("model.cls_token", lambda t: torch.full_like(t, float("nan"))),
    "scaler-string": _set("scaler", "x"),
}

REPORT_DAMAGE: dict[str, dict[str, Any]] = {
    "val-fraction-string": {"val_fraction": "abc"}, "val-fraction-big": {"val_fraction": 7.0},
    "seed-float": {"seed": 1.5}, "seed-list": {"seed": [1, 2]}, "data-list": {"data": ["x"]},
    "data-long": {"data": "x" * 5000}, "data-etc": {"data": "/etc"},
}


def cases(root: Path, rng: random.Random) -> list[Case]:
    """A damaged checkpoint.pt for ``train --resume`` and a damaged report.json for ``eval --run``, each."""
    out = [Case(f"runfolder-state-{name}", "run folders", "cli", "error", _state_case(root, name, damage),
                bulk=True) for name, damage in STATE_DAMAGE.items()]
    return out + [Case(f"runfolder-report-{name}", "run folders", "cli", "error", _report_case(root, name, config),
                       bulk=True) for name, config in REPORT_DAMAGE.items()]
