"""Timed trials of inference paths, and the cache of their winners.

``backend='auto'`` on a CPU runs each candidate path (precision x runtime) a few times on the same batch,
round-robin, keeps those whose output stays within the precision's cosine floor of eager fp32, and picks the
fastest by median time. The winner is remembered in a small JSON file keyed by the model's fingerprint, the CPU's
instruction set, the thread count, the batch size and the precision, so the next run starts at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .fileio import atomic_write

log = logging.getLogger(__name__)

#: the least cosine similarity to eager fp32 outputs that a path in each precision must reach
COSINE_FLOORS = {"fp32": 0.9999, "bf16": 0.999, "fp16": 0.999, "int8": 0.99}
TRIAL_ENV = "VITKIT_AUTO_TRIAL"  # "0": no trials, auto uses the static rule
CACHE_ENV = "VITKIT_CACHE_DIR"  # where the winners are kept (default ~/.cache/vitkit)
CACHE_FILE = "inference_paths.json"


def trials_enabled(trial: bool | None = None) -> bool:
    """``trial`` if given, else whether ``VITKIT_AUTO_TRIAL`` leaves trials on (they are on by default)."""
    if trial is not None:
        return trial
    return os.environ.get(TRIAL_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def model_fingerprint(model: nn.Module) -> str:
    """A short hash of the model's architecture and weights: every tensor's name, shape and dtype, and a strided
    sample of its values (enough to tell two trainings or initialisations apart, cheap for billions)."""
    digest = hashlib.sha256(json.dumps(getattr(getattr(model, "config", None), "to_dict", dict)(),
                                       sort_keys=True, default=str).encode())
    for name, t in model.state_dict().items():
        flat = t.detach().reshape(-1)
        step = max(1, flat.numel() // 1024)
        digest.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        digest.update(flat[::step][:1024].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:20]


def cache_key(fingerprint: str, *, cpu: str, threads: int, batch: int, precision: str) -> str:
    return f"{fingerprint}|{cpu}|threads={threads}|batch={batch}|{precision}"


class PathCache:
    """Winners of earlier trials, in ``<dir>/inference_paths.json``: ``{key: {"precision", "backend", ...}}``.
    A missing or damaged file is an empty cache (it is rewritten at the next trial), never an error."""

    def __init__(self, folder: str | os.PathLike | None = None) -> None:
        folder = folder or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "vitkit"
        self.path = Path(folder) / CACHE_FILE

    def _read(self) -> dict[str, Any]:
        try:
            if not self.path.is_file() or self.path.stat().st_size > 4 * 2**20:
                return {}
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            log.warning("ignoring the unreadable inference-path cache %s (%s)", self.path, type(exc).__name__)
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> dict[str, Any] | None:
        entry = self._read().get(key)
        ok = isinstance(entry, dict) and isinstance(entry.get("precision"), str) and isinstance(
            entry.get("backend"), str)
        return entry if ok else None

    def put(self, key: str, entry: Mapping[str, Any]) -> None:
        data = self._read()
        data[key] = dict(entry)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, lambda tmp: tmp.write_text(json.dumps(data, indent=1), encoding="utf-8"))
        except OSError as exc:  # a read-only home: the trial still chose, it is just not remembered
            log.warning("could not write the inference-path cache %s (%s)", self.path, exc)


@dataclass
class TrialResult:
    """The fastest path that met its floor, and every path's median seconds and cosine (None: failed to run)."""

    winner: str
    seconds: dict[str, float]
    cosines: dict[str, float | None]
    rounds: int = 0  # timed rounds of every path

    def describe(self, batch: int) -> str:
        ranked = sorted(self.seconds, key=self.seconds.get)
        rows = ", ".join(f"{label} {batch / self.seconds[label]:.1f} img/s" for label in ranked)
        failed = [k for k, c in self.cosines.items() if k not in self.seconds]
        below = f" (below the accuracy floor: {', '.join(failed)})" if failed else ""
        return f"measured at batch {batch} ({self.rounds} rounds): {rows}{below}"


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.float().flatten(), b.float().flatten(), dim=0))


def run_trial(candidates: Mapping[str, Callable[[torch.Tensor], torch.Tensor]], x: torch.Tensor,
              reference: torch.Tensor, floors: Mapping[str, float], *, rounds: int = 3, budget_s: float = 6.0,
              max_rounds: int = 40, timer: Callable[[], float] = time.perf_counter) -> TrialResult:
    """Time ``candidates`` (label -> runner) on ``x`` round-robin in a rotating order, after two untimed calls
    each (the first checks accuracy); a candidate whose output's cosine to ``reference`` is below
    ``floors[label]`` (or that raises) is out. At least ``rounds`` rounds, then more until ``budget_s`` seconds
    of timed calls (at most ``max_rounds``): a batch of one image is over in a tenth of a second, and a few rounds
    of it on a loaded machine do not separate paths 10-20% apart. The winner has the least median time."""
    cosines: dict[str, float | None] = {}
    alive: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    for label, fn in candidates.items():
        try:
            cosines[label] = _cosine(fn(x), reference)
            fn(x)  # a second warm-up: lazy initialisation in the runtimes happens on the first calls
        except Exception as exc:  # noqa: BLE001 (a path that cannot run here is simply not chosen)
            log.info("inference path %s failed in its trial: %s", label, exc)
            cosines[label] = None
            continue
        if cosines[label] >= floors[label]:
            alive[label] = fn
    if not alive:
        raise RuntimeError("no inference path met its accuracy floor")  # eager fp32 always does
    times: dict[str, list[float]] = {label: [] for label in alive}
    labels = list(alive)
    spent, r = 0.0, 0
    while r < rounds or (spent < budget_s and r < max_rounds):
        for label in labels[r % len(labels):] + labels[: r % len(labels)]:
            start = timer()
            alive[label](x)
            times[label].append(timer() - start)
            spent += times[label][-1]
        r += 1
    seconds = {label: statistics.median(t) for label, t in times.items()}
    return TrialResult(min(seconds, key=seconds.get), seconds, cosines, rounds=r)


__all__ = ["COSINE_FLOORS", "PathCache", "TrialResult", "cache_key", "model_fingerprint", "run_trial",
           "trials_enabled"]
