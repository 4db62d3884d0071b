"""--report-to: TensorBoard event files hold the rows of metrics.jsonl; other trackers plug in by name."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from test_train_common import TINY, one_thread  # noqa: F401 (fixture)
from vitkit.cli import main
from vitkit.errors import ConfigError
from vitkit.training import train
from vitkit.training.tracking import TENSORBOARD_DIR, register_reporter, unregister_reporter

pytestmark = pytest.mark.usefixtures("one_thread")


def _rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_events_hold_the_rows_of_metrics_jsonl(tmp_path: Path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(**TINY, epochs=2, out=str(tmp_path), report_to=("tensorboard",))
    acc = EventAccumulator(str(tmp_path / TENSORBOARD_DIR))
    acc.Reload()
    rows = _rows(tmp_path)
    numeric = [k for k, v in rows[0].items() if isinstance(v, (int, float))]
    assert sorted(acc.Tags()["scalars"]) == sorted(numeric) and "val_top1" in numeric
    for key in numeric:
        events = acc.Scalars(key)
        assert [e.step for e in events] == [r["step"] for r in rows], key
        # event files store float32
        assert [e.value for e in events] == pytest.approx([r[key] for r in rows], rel=1e-6), key


class Recorder:
    """A tracker that keeps what it is sent (what a wandb or MLflow hook would forward)."""

    runs: list[Recorder] = []

    def __init__(self, out: Path, cfg: Any) -> None:
        self.out, self.rows, self.closed = out, [], False
        Recorder.runs.append(self)

    def log(self, row: dict[str, Any]) -> None:
        self.rows.append(dict(row))

    def close(self) -> None:
        self.closed = True


def test_a_registered_reporter_gets_every_row_and_is_closed(tmp_path: Path):
    register_reporter("recorder", Recorder)
    try:
        train(**TINY, epochs=2, out=str(tmp_path), report_to=("recorder",))
    finally:
        unregister_reporter("recorder")
    (run,) = Recorder.runs
    assert run.out == tmp_path and run.closed and run.rows == _rows(tmp_path)


def test_unknown_trackers_and_a_missing_tensorboard_fail_clearly(tmp_path: Path, monkeypatch, capsys):
    assert main(["train", "--report-to", "tensorboard,nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--report-to tensorboard,nope is not allowed: expected trackers among tensorboard" in err
    assert "'nope' is not one" in err
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(ConfigError, match="pip install tensorboard"):
        train(**TINY, epochs=1, out=str(tmp_path), report_to=("tensorboard",))
