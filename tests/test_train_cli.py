"""`vitkit train` / `vitkit eval` on an image folder, then `vitkit predict` on the exported samples; CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_train_common import TINY_ARGS, one_thread  # noqa: F401 (fixture)
from vitkit.cli import main
from vitkit.data.digits import load_digits_images

FOLDER_ARGS = [*TINY_ARGS, "--batch-size", "16", "--crop-scale", "0.8", "1.0", "--hflip", "0"]
CLASSES = ("three", "seven", "zero")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three classes of digit PNGs (40 each) in class folders, plus one file that is not an image."""
    root = tmp_path_factory.mktemp("digits_folder")
    images, labels = load_digits_images(32)
    wanted = {3: "three", 7: "seven", 0: "zero"}
    counts = dict.fromkeys(wanted, 0)
    for img, label in zip(images, labels):
        if label in wanted and counts[label] < 40:
            (root / wanted[label]).mkdir(exist_ok=True)
            img.save(root / wanted[label] / f"{counts[label]}.png")
            counts[label] += 1
    (root / "zero" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")
    return root


@pytest.fixture(scope="module")
def run(folder: Path, tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> tuple[Path, str]:  # noqa: F811
    out = tmp_path_factory.mktemp("out")
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["train", str(folder), *FOLDER_ARGS, "--epochs", "6", "--out", str(out), "--export-samples", "1",
                     "--aug", "randaugment", "--magnitude", "5", "--mixup", "0.2", "--no-plots"])
    assert code == 0
    return out, buf.getvalue()


def test_train_on_a_folder_prints_a_summary_and_every_epoch(run: tuple[Path, str]):
    out, printed = run
    assert "trainable (100.0%" in printed and "1 unreadable files skipped" in printed
    assert "96 training / 24 validation images, 3 classes" in printed
    assert sum(line.startswith("epoch") for line in printed.splitlines()) == 6
    report = json.loads((out / "report.json").read_text())
    assert report["classes"] == sorted(CLASSES) and len(report["skipped_files"]) == 1
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] and rows[-1]["val_loss"] < rows[0]["val_loss"]


def test_eval_on_the_run_folder_gives_the_best_or_last_epoch_accuracy(run: tuple[Path, str],
                                                                      capsys: pytest.CaptureFixture):
    out, _ = run
    report = json.loads((out / "report.json").read_text())
    assert main(["eval", "--run", str(out), "--json", "--checkpoint", "last"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["val_top1"] == report["final_val_top1"] and result["val_images"] == 24
    assert main(["eval", "--run", str(out), "--json"]) == 0  # best by default
    result = json.loads(capsys.readouterr().out)
    assert result["val_top1"] == report["best_val_top1"] and result["model"] == str(out / "best")
    assert main(["eval", "--run", str(out), "--checkpoint", "last"]) == 0
    assert f"{out / 'last'}: the last (epoch 6 of 6) checkpoint" in capsys.readouterr().out


def test_predict_reads_the_exported_samples_with_class_names(run: tuple[Path, str], capsys: pytest.CaptureFixture):
    out, _ = run
    samples = sorted(str(p) for p in (out / "samples").glob("*.png"))
    assert [Path(s).name for s in samples] == ["seven_0.png", "three_0.png", "zero_0.png"]
    assert main(["predict", *samples, "--model", str(out / "best"), "--top-k", "3", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 3 and all(len(r["predictions"]) == 3 for r in results)


def test_linear_probe_trains_only_the_head(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    assert main(["train", str(folder), *FOLDER_ARGS, "--epochs", "1", "--linear-probe", "--out", str(tmp_path),
                 "--no-plots"]) == 0
    assert "195 trainable" in capsys.readouterr().out  # head: 64 x 3 weights + 3 biases


@pytest.mark.parametrize("argv, message", [
    (["train", "/no/such/folder"], "does not exist"),
    (["train", "--freeze", "everything"], "--freeze 'everything' is not allowed"),
    (["train", "--linear-probe", "--freeze", "blocks:2"], "--linear-probe trains only the head"),
    (["train", "--set", "embed_dim"], "is not FIELD=VALUE"),
    (["train", "--set", "embed_dmi=32"], "did you mean 'embed_dim'"),
    (["train", "--batch-size", "10", "--accum-steps", "3"], "--batch-size 10 is not allowed: expected a multiple of "
                                                            "--accum-steps 3"),
    (["eval"], "Name the model to evaluate"),
    (["eval", "--run", "/no/such/run"], "has no report.json"),
])
def test_user_errors_are_one_line_with_exit_code_2(argv: list[str], message: str, capsys: pytest.CaptureFixture,
                                                   tmp_path: Path):
    if argv[0] == "train":
        argv = [*argv, "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_predict_names_the_folder_classes(run: tuple[Path, str], capsys: pytest.CaptureFixture):
    out, _ = run
    assert main(["predict", str(out / "samples" / "zero_0.png"), "--model", str(out / "best"), "--json"]) == 0
    labels = {p["label"] for p in json.loads(capsys.readouterr().out)[0]["predictions"]}
    assert labels == set(CLASSES)


def test_an_interrupt_before_training_says_nothing_was_written(tmp_path: Path, monkeypatch, capsys):
    import vitkit.training.api as api  # `vitkit train` imports it when it runs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "train", interrupted)
    assert main(["train", "--out", str(tmp_path)]) == 130
    assert capsys.readouterr().err.strip() == "vitkit train: interrupted; no training state was written"
