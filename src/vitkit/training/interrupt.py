"""Stopping a run on request (Ctrl-C, a scheduler's SIGTERM) at a step boundary, with its state saved.

A signal only raises a flag; the loop looks at it between optimizer steps (alone: after every step; under
DDP: at the logging interval, agreed by all ranks in one collective), writes the training state atomically
and raises ``TrainingInterrupted``. A second signal aborts at once (the state saved last is kept).

A read of data can take any time (a slow or hung file system, a stuck worker), so the loop fetches its
batches through ``interruptible``: a signal that comes while a batch is awaited ends the wait at once with
``StopWhileWaiting`` (the run is then at a step boundary, so the loop can still save and stop).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """A run stopped on request after saving its state; ``checkpoint`` is where (None: nothing written)."""

    def __init__(self, *, checkpoint: Path | None, epoch: int, step: int) -> None:
        self.checkpoint, self.epoch, self.step = checkpoint, epoch, step
        where = f"the training state is in {checkpoint}" if checkpoint else "no training state was written"
        super().__init__(f"training stopped at epoch {epoch + 1}, step {step}; {where}")


class StopWhileWaiting(KeyboardInterrupt):
    """The stop request came while the run waited for data (raised inside ``StopRequest.waiting``)."""


class StopRequest:
    """``with StopRequest() as stop:`` catches SIGINT/SIGTERM for the block; ``stop.requested`` says one came.

    Only the main thread can install signal handlers; elsewhere the block runs without them (a Ctrl-C then
    interrupts as usual).
    """

    def __init__(self) -> None:
        self.requested = False
        self._waiting = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:  # the second one: stop now, without saving again
            self._restore()
            raise KeyboardInterrupt
        self.requested = True
        if self._waiting:  # the run may wait for ever: end the wait (the caller saves and stops)
            self._waiting = False
            raise StopWhileWaiting

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """A block that may wait long (for data): a stop request inside it raises ``StopWhileWaiting`` at once."""
        self._waiting = True
        try:
            yield
        finally:
            self._waiting = False

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self._restore()


_END = object()


def interruptible(items: Iterable[Any], stop: StopRequest) -> Iterator[Any]:
    """``items``, each one fetched inside ``stop.waiting()`` (a stop request while one is awaited ends the wait)."""
    it = iter(items)
    while True:
        with stop.waiting():
            item = next(it, _END)
        if item is _END:
            return
        yield item
