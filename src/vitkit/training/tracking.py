"""Experiment tracking: each epoch's row (the one ``metrics.jsonl`` gets) sent to the trackers ``report_to`` names.

Built in: ``tensorboard`` (event files in ``OUT/tensorboard``, read by ``tensorboard --logdir OUT``; needs
``pip install tensorboard``). Others plug in with ``register_reporter(name, factory)``, where
``factory(out, cfg)`` returns an object with ``log(row)`` and ``close()``; for example wandb::

    class Wandb:
        def __init__(self, out, cfg):
            import wandb
            self.run = wandb.init(dir=str(out), config=cfg.to_dict())
        def log(self, row):
            self.run.log(row, step=row["step"])
        def close(self):
            self.run.finish()

    vitkit.training.tracking.register_reporter("wandb", Wandb)

Only rank 0 reports; every numeric value of a row is logged at the row's optimizer ``step``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from ..errors import ConfigError, keyword

TENSORBOARD_DIR = "tensorboard"


class Reporter(Protocol):
    def log(self, row: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


ReporterFactory = Callable[[Path, Any], Reporter]
_REPORTERS: dict[str, ReporterFactory] = {}


def register_reporter(name: str, factory: ReporterFactory) -> None:
    """Make ``report_to=(name,)`` (``--report-to name``) build ``factory(out, cfg)`` on rank 0 of a run."""
    if not name or not isinstance(name, str) or "," in name:
        raise ConfigError(f"Reporter name {name!r} is not allowed: expected a non-empty name without commas.")
    _REPORTERS[name] = factory


def unregister_reporter(name: str) -> None:
    _REPORTERS.pop(name, None)


def reporter_names() -> list[str]:
    return sorted(_REPORTERS)


def unknown_reporter(names: Sequence[str]) -> str | None:
    """What was expected, when one of ``names`` is not a registered tracker (None when all are)."""
    unknown = [n for n in names if n not in _REPORTERS]
    if unknown:
        return (f"trackers among {', '.join(reporter_names())} ({unknown[0]!r} is not one; add others with "
                f"vitkit.training.tracking.register_reporter)")
    return None


class TensorBoardReporter:
    """Scalars in ``OUT/tensorboard``, one per numeric value of a row, at the row's optimizer step."""

    def __init__(self, out: Path, cfg: Any = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            named = keyword("report_to", ("tensorboard",), typed="tensorboard")
            raise ConfigError(f"{named} needs the tensorboard package: pip install tensorboard (or pip install "
                              f"'vitkit[tensorboard]').", hints=(named,)) from None
        self.writer = SummaryWriter(log_dir=str(out / TENSORBOARD_DIR))

    def log(self, row: dict[str, Any]) -> None:
        step = int(row["step"])
        for key, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()  # a killed run keeps every epoch it reported

    def close(self) -> None:
        self.writer.close()


register_reporter("tensorboard", TensorBoardReporter)


class Reporters:
    """The run's trackers (none on ranks other than 0): ``log(row)`` to each, ``close()`` them all."""

    def __init__(self, reporters: list[Reporter]) -> None:
        self.reporters = reporters

    def log(self, row: dict[str, Any]) -> None:
        for r in self.reporters:
            r.log(row)

    def close(self) -> None:
        for r in self.reporters:
            r.close()
        self.reporters = []


def open_reporters(cfg: Any, out: Path, is_main: bool) -> Reporters:
    """The trackers ``cfg.run.report_to`` names, opened on rank 0 (an empty set elsewhere)."""
    names = list(cfg.run.report_to)
    return Reporters([_REPORTERS[n](out, cfg) for n in names] if is_main else [])
