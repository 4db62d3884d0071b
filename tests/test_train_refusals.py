"""What `vitkit train` and `vitkit eval` refuse in one line before any work (bad numbers, nothing to resume, a
system folder as --out, one class, a damaged report), and what they no longer say or keep."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

import vitkit
import vitkit.cli as cli
from test_train_common import TINY, TINY_ARGS, TINY_MODEL
from vitkit.errors import UnsafeCheckpointError
from vitkit.training import train
from vitkit.training.checkpoint import load_state
from vitkit.training.metrics import MAX_CONFUSION_CLASSES, EvalCounts


def _cli(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize(("flag", "value", "setting"), [
    ("--warmup-epochs", "-1", "warmup_epochs"), ("--weight-decay", "-1", "weight_decay"), ("--min-lr", "-1", "min_lr"),
    ("--max-steps", "0", "max_steps"), ("--max-steps", "-3", "max_steps"), ("--export-samples", "-1", "export_samples"),
])
def test_a_bad_number_is_one_line_before_training(capsys, tmp_path: Path, flag: str, value: str, setting: str):
    code, err = _cli(capsys, "train", *TINY_ARGS, "--epochs", "1", "--out", str(tmp_path), flag, value)
    assert code == 2 and len(err.splitlines()) == 1 and f"{flag} {value}" in err and f"{setting}=" not in err, err
    assert not (tmp_path / "checkpoint.pt").exists()


def test_resume_with_nothing_to_resume_is_refused(capsys, tmp_path: Path):
    code, err = _cli(capsys, "train", *TINY_ARGS, "--epochs", "1", "--out", str(tmp_path / "nothere"), "--resume")
    assert code == 2 and "holds no checkpoint.pt" in err and "drop --resume" in err, err
    assert not (tmp_path / "nothere" / "checkpoint.pt").exists()


def test_a_system_folder_as_out_is_refused_before_training(capsys):
    code, err = _cli(capsys, "train", *TINY_ARGS, "--epochs", "1", "--out", "/dev/vitkit-test-out",
                     "--report-to", "tensorboard")
    assert code == 2 and "system folder" in err and not Path("/dev/vitkit-test-out").exists(), err


def _folder(root: Path, classes: tuple[str, ...], per_class: int) -> Path:
    for i, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for j in range(per_class):
            Image.new("RGB", (12, 12), (40 * i + j, 90, 200 - 30 * i)).save(root / name / f"{j}.png")
    return root


def test_a_one_class_folder_is_refused(capsys, tmp_path: Path):
    data = _folder(tmp_path / "one", ("cats",), 4)
    code, err = _cli(capsys, "train", str(data), *TINY_ARGS, "--epochs", "1", "--out", str(tmp_path / "run"))
    assert code == 2 and "one class (cats)" in err, err


def test_top5_only_for_more_than_five_classes_and_no_huge_confusion():
    assert "val_top5" not in EvalCounts(3).summary() and "val_top5" in EvalCounts(10).summary()
    assert EvalCounts(MAX_CONFUSION_CLASSES + 1).confusion is None and EvalCounts(10).confusion is not None


def test_overwrite_clears_adapters_and_tensorboard_and_the_state_holds_no_confusion(tmp_path: Path):
    (tmp_path / "report.json").write_text("{}")
    for leftover in ("adapters/best", "tensorboard/old"):
        (tmp_path / leftover).mkdir(parents=True)
    train(**TINY, epochs=1, max_steps=2, out=str(tmp_path), overwrite=True)
    assert not (tmp_path / "adapters").exists() and not (tmp_path / "tensorboard").exists()
    assert "confusion" not in load_state(tmp_path / "checkpoint.pt")


@pytest.fixture()
def two_class_model(tmp_path: Path) -> Path:
    model = vitkit.create_model("vit_digits", num_classes=2, **TINY_MODEL)
    model.pretrained_cfg = dataclasses.replace(model.pretrained_cfg, label_names=("a", "b"))
    vitkit.save_pretrained(model, tmp_path / "model")
    return tmp_path / "model"


def test_eval_scores_a_whole_folder_unless_a_split_is_asked(capsys, tmp_path: Path, two_class_model: Path):
    data = _folder(tmp_path / "test", ("a", "b"), 3)
    for extra, scope, n in (([], "every image", 6), (["--val-fraction", "1"], "every image", 6),
                            (["--split", "val"], "val split", 2)):
        code = cli.main(["eval", str(data), "--model", str(two_class_model), *extra])
        out = capsys.readouterr().out
        assert code == 0 and f"({scope}, {n} images)" in out and "top-5" not in out, (extra, out)


@pytest.mark.parametrize(("config", "named"), [
    ({"val_fraction": "abc"}, "val_fraction"), ({"seed": 1.5}, "seed"), ({"seed": [1] * 5}, "seed"),
    ({"data": ["x"]}, "data"), ({"data": "x" * 5000}, "data"), ({"val_fraction": 7.0}, "val_fraction"),
    ({"labels": {"a": 1}}, "labels"),
])
def test_eval_run_with_a_damaged_report_is_one_line(capsys, tmp_path: Path, two_class_model: Path, config, named):
    run = tmp_path / "run"
    run.mkdir()
    two_class_model.rename(run / "best")
    (run / "report.json").write_text(json.dumps({"config": config}))
    code, err = _cli(capsys, "eval", "--run", str(run))
    assert code == 2 and len(err.splitlines()) == 1 and f"says {named}=" in err, err


def test_eval_run_whose_report_names_a_system_folder_refuses_before_reading_it(capsys, tmp_path: Path,
                                                                               two_class_model: Path):
    run = tmp_path / "run"
    run.mkdir()
    two_class_model.rename(run / "best")
    (run / "report.json").write_text(json.dumps({"config": {"data": "/etc"}}))
    start = time.perf_counter()
    code, err = _cli(capsys, "eval", "--run", str(run))
    assert code == 2 and "The model predicts 2 classes" in err and time.perf_counter() - start < 20, err


def test_a_resume_does_not_call_the_head_newly_initialized(tmp_path: Path, two_class_model: Path, caplog):
    settings = dict(**TINY, model="vit_digits", weights=str(two_class_model), epochs=1, out=str(tmp_path / "run"))
    with caplog.at_level(logging.WARNING, logger="vitkit"):
        train(**settings, max_steps=2)
    assert any("newly initialized: head" in r.getMessage() for r in caplog.records)  # 2 classes -> 10
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vitkit"):
        train(**settings, max_steps=3, resume="auto")
    assert not any("newly initialized" in r.getMessage() for r in caplog.records)


def test_ctrl_c_while_starting_is_one_line(capsys, monkeypatch):
    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    code, err = _cli(capsys, "train", "--epochs", "1")
    assert code == 130 and err == "vitkit train: interrupted while starting"


def test_resume_reads_the_state_through_the_weight_loaders_zip_checks(tmp_path: Path):
    torch.save({"version": 1, "model": {"w": torch.zeros(20 * 2**20)}}, tmp_path / "plain.pt")  # 80 MB of zeros
    with zipfile.ZipFile(tmp_path / "plain.pt") as src, \
            zipfile.ZipFile(tmp_path / "checkpoint.pt", "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
        for info in src.infolist():  # the same members, deflated: 80 MB from ~80 KB, a zip bomb's ratio
            dst.writestr(info.filename, src.read(info.filename))
    with pytest.raises(UnsafeCheckpointError, match="zip bomb"):
        load_state(tmp_path / "checkpoint.pt")


def test_resuming_non_finite_weights_says_so(capsys, tmp_path: Path):
    train(**TINY, epochs=1, max_steps=2, out=str(tmp_path))
    state = load_state(tmp_path / "checkpoint.pt")
    state["model"]["cls_token"].fill_(float("nan"))
    torch.save(state, tmp_path / "checkpoint.pt")
    code, err = _cli(capsys, "train", *TINY_ARGS, "--epochs", "1", "--out", str(tmp_path), "--resume")
    assert code == 2 and "'cls_token' holds NaN or Inf" in err and "intact" not in err, err


def test_fsdp_without_torchrun_says_it_trains_unsharded(tmp_path: Path, caplog):
    with caplog.at_level(logging.WARNING, logger="vitkit"):
        train(**TINY, epochs=1, max_steps=1, out=str(tmp_path), strategy="fsdp")
    assert any("fsdp strategy" in r.getMessage() and "trains unsharded" in r.getMessage() for r in caplog.records)
