"""The public entry point ``train`` (one process or torchrun's many); ``evaluate`` is in evaluation.py."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ConfigError, keyword
from ..fileio import check_output_path
from .checkpoint import STATE_FILE
from .config import TrainConfig
from .distributed import Dist
from .loop import Trainer
from .metrics import METRICS_CSV, METRICS_JSONL, PLOT_FILES, REPORT_FILE, plot_confusion, plot_curves, write_report
from .setup import run_settings

logger = logging.getLogger(__name__)

# A folder holding one of these holds a run; these are what a run writes (cleared by ``overwrite``)
RUN_MARKERS = (STATE_FILE, REPORT_FILE)
RUN_OUTPUTS = (STATE_FILE, REPORT_FILE, METRICS_JSONL, METRICS_CSV, *PLOT_FILES.values(), "best", "last", "ema",
               "best_ema", "samples", "adapters", "tensorboard")


@dataclass
class TrainResult:
    """What a run produced: its report (also in ``OUT/report.json``) and whether it ran to the end."""

    out: Path
    report: dict[str, Any]
    completed: bool

    @property
    def best_val_top1(self) -> float:
        return self.report.get("best_val_top1")

    @property
    def final_val_top1(self) -> float:
        return self.report.get("final_val_top1")


def train(config: TrainConfig | None = None, *, on_start: Callable[[dict[str, Any]], None] | None = None,
          on_epoch: Callable[[dict[str, Any]], None] | None = None, **settings: Any) -> TrainResult:
    """Fine-tune a model on an image folder (or the bundled digits) and write everything to ``out``.

    ``config`` or keyword ``settings`` (TrainConfig fields). Under ``torchrun`` every process calls this;
    they train one model with DDP and only rank 0 writes. ``on_start(summary)`` and ``on_epoch(row)``
    are called on rank 0 (the CLI prints them). Writes to ``out``: ``checkpoint.pt`` (the training state),
    ``best/`` and ``last/`` (vitkit format), ``metrics.jsonl``/``.csv``, PNG plots and ``report.json``.
    """
    cfg = (config if config is not None else TrainConfig.from_dict(settings)).resolved()
    with run_settings(deterministic=cfg.run.deterministic, threads=cfg.run.threads):
        return _train(cfg, on_start, on_epoch)


def _train(cfg: TrainConfig, on_start: Callable[[dict[str, Any]], None] | None,
           on_epoch: Callable[[dict[str, Any]], None] | None) -> TrainResult:
    dist = Dist.from_env(cfg.run.device)
    trainer: Trainer | None = None
    try:
        prepare_out(cfg, dist)
        trainer = Trainer(cfg, dist, on_epoch=on_epoch)
        resumed = trainer.resume(cfg.run.resume) if cfg.run.resume else False
        p = trainer.progress
        summary = {**trainer.summary(), "resumed": resumed, "start_epoch": p.epoch, "start_step": p.step,
                   "start_batch": p.batch}
        if dist.is_main:
            logger.info("training %s", summary)
            if on_start is not None:
                on_start(summary)
        samples = trainer.export_samples()
        start = time.perf_counter()
        with trainer.stop:
            completed = _run_epochs(trainer)
        report = _finish(trainer, samples, time.perf_counter() - start, completed) if dist.is_main else {}
        dist.barrier()
        return TrainResult(out=trainer.out, report=report, completed=completed)
    finally:
        if trainer is not None:
            trainer.close()  # before the group goes: see Trainer.close
        dist.close()


def _run_epochs(trainer: Trainer) -> bool:
    """Train to the last epoch; False when ``max_steps`` stopped it. A stop request raises TrainingInterrupted."""
    while trainer.progress.epoch < trainer.cfg.optim.epochs:
        if not trainer.train_epoch():
            return False
        trainer.end_epoch()  # saves the state
        trainer.stop_if_asked(synced=trainer.check_finite() if trainer.dist.initialized else None)
    return True


def prepare_out(cfg: TrainConfig, dist: Dist) -> None:
    """Refuse an ``out`` folder that holds a run unless resuming or told to overwrite it (then clear it), one that
    cannot hold a run (under /dev, /proc, /sys), and ``resume='auto'`` with no state in it to resume."""
    out = Path(cfg.run.out)
    check_output_path(out / STATE_FILE)  # a place training could never save to (/dev, /proc, ...): refused now
    where = keyword("out", str(out))
    if cfg.run.resume == "auto" and not (out / STATE_FILE).is_file():
        resume = keyword("resume", "auto", typed="")
        raise CheckpointError(f"{resume}: {where} holds no {STATE_FILE} to continue from. Check the folder name, "
                              f"or drop {resume} to start a new run there.", hints=(resume, where))
    found = [name for name in RUN_MARKERS if (out / name).exists()]
    if not found or cfg.run.resume:
        return
    if not cfg.run.overwrite:
        resume, overwrite, other = keyword("resume", "auto", typed=""), keyword("overwrite", True), keyword("out")
        raise ConfigError(f"{where} already holds a training run ({', '.join(found)}), which this run would replace. "
                          f"Pass {resume} to continue it, {overwrite} to replace it, or another {other}.",
                          hints=(where, resume, overwrite, other))
    if dist.is_main:
        logger.warning("replacing the run in %s (asked to overwrite it)", out)
        for name in RUN_OUTPUTS:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
    dist.barrier()


def _finish(trainer: Trainer, samples: list[Path], seconds: float, completed: bool) -> dict[str, Any]:
    """Plots and ``report.json`` (rank 0)."""
    out, p = trainer.out, trainer.progress
    rows = p.history
    plots: dict[str, str] = {}
    if trainer.cfg.run.plots and rows:
        title = f"{trainer.summary()['model']}, {out}"
        plots = {k: str(v) for k, v in plot_curves(rows, out, title).items()}
        if trainer.last_confusion is not None:
            which = f"{title}, validation after the last epoch ({rows[-1]['epoch']})"
            plots["confusion"] = str(plot_confusion(trainer.last_confusion, trainer.splits.classes, out, which))
    last = rows[-1] if rows else {}
    report = {
        "completed": completed, **trainer.task.report(rows, p.best_score if rows else None),
        "final_val_loss": last.get("val_loss"),
        "best_epoch": p.best_epoch if rows else None, "epochs": len(rows), "steps": p.step,
        "train_time_s": round(sum(r["epoch_time_s"] for r in rows), 3), "wall_time_s": round(seconds, 3),
        "checkpoints": _checkpoints(out),
        "metrics": {"jsonl": str(out / METRICS_JSONL), "csv": str(out / METRICS_CSV)}, "plots": plots,
        "samples": [str(s) for s in samples], "classes": list(trainer.splits.classes),
        "skipped_files": trainer.splits.skipped, "skipped_images": sum(r["skipped_images"] for r in rows),
        "summary": trainer.summary(), "config": trainer.cfg.to_dict(),
    }
    if trainer.ema is not None and rows:
        report.update(_ema_report(trainer))
    write_report(report, out)
    return report


def _ema_report(trainer: Trainer) -> dict[str, Any]:
    """The EMA's figures and checkpoints, and which weights validated best (raw or EMA)."""
    p, out, last = trainer.progress, trainer.out, trainer.progress.history[-1]
    return {"ema_decay": trainer.cfg.optim.ema, "best_ema_val_top1": p.best_ema_top1,
            "best_ema_epoch": p.best_ema_epoch,
            "final_ema_val_top1": last.get("ema_val_top1"),
            "best_weights": "ema" if p.best_ema_top1 > p.best_score else "raw",
            "checkpoints": {**_checkpoints(out), "ema": str(out / "ema"), "best_ema": str(out / "best_ema")}}


def _checkpoints(out: Path) -> dict[str, str]:
    return {"best": str(out / "best"), "last": str(out / "last"), "state": str(out / STATE_FILE)}
