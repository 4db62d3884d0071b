"""Never lose work: atomic training-state checkpoints, RNG capture, and model exports in vitkit's format.

The training state (``checkpoint.pt``) holds plain tensors, dicts, lists, strings and numbers only,
so it loads with ``torch.load(weights_only=True)``: nothing is unpickled but data. It is written to a
temporary file in the same folder, flushed to disk, then renamed over the old one, so a kill at any
moment leaves either the old or the new checkpoint, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError, keyword
from ..fileio import atomic_write
from ..weights import save_pretrained
from ..weights.validate import check_regular_file, check_zip, open_zip, verify_zip_crc
from .peft import exportable, save_run_adapters

STATE_FILE = "checkpoint.pt"
STATE_VERSION = 1


def save_state(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a training state atomically."""
    return atomic_write(Path(path), lambda tmp: torch.save(state, tmp))


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training state without unpickling any object (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        out, resume = keyword("out"), keyword("resume", str(path))
        raise CheckpointError(f"Training checkpoint {str(path)!r} does not exist. Pass the {STATE_FILE} a run "
                              f"wrote (in its {out} folder), or drop {resume} to start afresh.", hints=(out, resume))
    check_regular_file(path, "training checkpoint")
    if zipfile.is_zipfile(path):  # the weight loader's checks: no zip bomb, no damaged member, before reading
        with open_zip(path, "torch") as zf:
            check_zip(path, zf, "torch")
            verify_zip_crc(path, zf, "torch")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise CheckpointError(f"Training checkpoint {str(path)!r} cannot be read ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}). It is corrupt or not a vitkit "
                              f"training checkpoint; resume from another one or start afresh.") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION or "model" not in state:
        raise CheckpointError(f"{str(path)!r} is not a vitkit training checkpoint (version {STATE_VERSION}); "
                              f"resume from a {STATE_FILE} written by `vitkit train`.")
    check_state(state, str(path))
    return state


# the parts of a training state and the type each must have (their insides are checked when restored)
STATE_PARTS: dict[str, type | tuple[type, ...]] = {
    "model": dict, "optimizer": dict, "scheduler": dict, "scaler": dict, "rng": dict, "progress": dict,
    "model_config": dict, "classes": list}


def damaged(path: str, part: str, why: str) -> CheckpointError:
    """The error for a training state whose ``part`` cannot be used."""
    hints = keyword("weights", "OUT/last", typed="OUT/last"), keyword("out", "NEW_FOLDER", typed="NEW_FOLDER")
    return CheckpointError(f"Training checkpoint {path!r} is damaged: its {part} {why}. Resume from another copy, "
                           f"or start a new run from its last export: {hints[0]} {hints[1]}.", hints=hints)


def check_state(state: dict[str, Any], path: str) -> None:
    """Refuse a training state whose parts are missing, of the wrong type, or whose weights are not finite."""
    for part, kind in STATE_PARTS.items():
        if not isinstance(state.get(part), kind):
            raise damaged(path, part, f"is {type(state.get(part)).__name__}, expected {kind.__name__}")
    for name, tensor in state["model"].items():
        if not isinstance(tensor, torch.Tensor):
            raise damaged(path, "model", f"entry {str(name)[:80]!r} is not a tensor")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise damaged(path, "model", f"tensor {str(name)[:80]!r} holds NaN or Inf (the run had diverged)")


@contextlib.contextmanager
def restoring(path: str, part: str) -> Iterator[None]:
    """Turn a failure to restore one part of a training state into a one-line CheckpointError naming it."""
    try:
        yield
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError, OverflowError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise damaged(path, part, f"cannot be restored ({type(exc).__name__}: {first})") from None


def check_compatible(state: dict[str, Any], model_config: dict[str, Any], classes: list[str], path: str) -> None:
    """Fail clearly when a checkpoint was written for another architecture or class list."""
    saved = state.get("model_config", {})
    diff = sorted(k for k in set(saved) | set(model_config) if saved.get(k) != model_config.get(k))
    if diff:
        details = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs run {model_config.get(k)!r}" for k in diff[:4])
        hints = keyword("model"), keyword("out")
        raise CheckpointError(f"Checkpoint {path!r} was written for another architecture ({details}). Resume with "
                              f"the same {hints[0]} and settings, or use another {hints[1]} folder.", hints=hints)
    if list(state.get("classes", [])) != list(classes):
        out = keyword("out")
        raise CheckpointError(f"Checkpoint {path!r} was trained on classes {state.get('classes')} but the data has "
                              f"{classes}. Resume on the same data, or use another {out} folder.", hints=(out,))


# Settings that say where, how fast or how often a run goes, not what it computes: a resume may change them.
# Everything else (the schedule, the optimizer, the loss, the augmentation, the seed) shapes the run, and
# a resume that changed it would silently become another run (e.g. --epochs reshapes the cosine).
RUNTIME_SETTINGS = frozenset({
    "data", "out", "model", "weights", "model_overrides", "resume", "device", "workers", "threads", "eval_batch_size",
    "save_every_steps", "max_steps", "plots", "export_samples", "log_every", "grad_checkpointing", "deterministic",
    "compile", "teacher_weights", "overwrite"})


def check_settings(saved: dict[str, Any], run: dict[str, Any], defaults: dict[str, Any], path: str, out: str) -> None:
    """Refuse to resume a checkpoint with training settings that differ from the ones it was written with.

    ``saved``/``run``: resolved TrainConfig dicts; ``defaults``: values for settings an older checkpoint lacks.
    """
    keys = sorted((set(saved) | set(run)) - RUNTIME_SETTINGS)
    diff = [(k, saved.get(k, defaults.get(k)), run.get(k, defaults.get(k))) for k in keys]
    diff = [(k, old, new) for k, old, new in diff if old != new]
    if not diff:
        return
    changes = "; ".join(f"{k}: checkpoint {old!r}, now {new!r}" for k, old, new in diff)
    again = [keyword(k, old, typed=_flag_value(old)) for k, old, _ in diff]
    weights, new = keyword("weights", f"{out}/last"), keyword("out", "NEW_FOLDER", typed="NEW_FOLDER")
    raise ConfigError(f"Cannot resume from {path!r}: the run asks for other training settings than the checkpoint "
                      f"was written with ({changes}); a resume continues the same schedule. Resume with "
                      f"{' '.join(map(str, again))}, or start a new run from its weights: {weights} {new}.",
                      hints=(*again, weights, new))


def _flag_value(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def rng_state() -> dict[str, Any]:
    """Every global random state a run draws from, as plain tensors and lists."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def export_model(model: torch.nn.Module, path: Path) -> Path:
    """Save ``model`` in vitkit's format as a folder, replacing an older export only once the new one is complete."""
    tmp = path.with_name(f".{path.name}.tmp")
    old = path.with_name(f".{path.name}.old")
    if old.exists() and not path.exists():  # a kill between the two renames below: the old export is the good one
        old.rename(path)
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    save_pretrained(exportable(model), tmp, format="vitkit")  # LoRA: a merged plain copy
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)
    save_run_adapters(model, path)  # LoRA: the adapters alone too, in OUT/adapters/<name>
    return path
