"""`vitkit train` on label files (CSV, JSONL with a validation file) and on a saved Hugging Face dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import vitkit
from test_train_common import TINY, TINY_ARGS, one_thread  # noqa: F401 (fixture)
from vitkit.cli import main
from vitkit.data.digits import load_digits_images
from vitkit.training import train

NAMES = {0: "zero", 3: "three", 7: "seven"}
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pngs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, str]]]:
    """40 PNGs of each of three digits in one flat folder, with their class names."""
    root = tmp_path_factory.mktemp("pngs")
    images, labels = load_digits_images(32)
    rows, counts = [], dict.fromkeys(NAMES, 0)
    for i, (img, y) in enumerate(zip(images, labels)):
        if y in NAMES and counts[y] < 40:
            img.save(root / f"img{i}.png")
            rows.append((f"img{i}.png", NAMES[y]))
            counts[y] += 1
    return root, rows


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    assert main(["train", *argv, *TINY_ARGS, "--batch-size", "16", "--epochs", "1", "--no-plots",
                 "--export-samples", "0"]) == 0
    return capsys.readouterr().out


def test_a_csv_label_file_trains_and_the_summary_says_what_was_found(pngs, tmp_path, capsys):
    root, rows = pngs
    csv = root / "labels.csv"
    csv.write_text("path,label\n" + "".join(f"{p},{c}\n" for p, c in rows) + "missing.png,zero\n")
    out = _run_cli(["--labels", str(csv), "--out", str(tmp_path)], capsys)
    assert f"data {csv}: 96 training / 24 validation images, 3 classes, 1 unreadable files skipped, single-label" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["classes"] == ["seven", "three", "zero"] and report["summary"]["kind"] == "single-label"
    assert report["config"]["epochs"] == 1 and report["config"]["out"] == str(tmp_path)
    model = vitkit.from_pretrained(tmp_path / "last")
    assert list(model.pretrained_cfg.label_names) == ["seven", "three", "zero"] and not model.pretrained_cfg.multi_label
    # `eval --run` scores the run's own label file and split, not the bundled digits
    assert main(["eval", "--run", str(tmp_path), "--checkpoint", "last", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert result["val_images"] == 24 and result["val_top1"] == pytest.approx(last["val_top1"], abs=1e-9)


def test_a_jsonl_file_with_a_validation_file(pngs, tmp_path, capsys):
    root, rows = pngs
    train_file, val_file = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    train_file.write_text("".join(json.dumps({"path": str(root / p), "label": c}) + "\n" for p, c in rows[:90]))
    val_file.write_text("".join(json.dumps({"path": str(root / p), "label": c}) + "\n" for p, c in rows[90:]))
    out = _run_cli(["--labels", str(train_file), "--val-labels", str(val_file), "--out", str(tmp_path / "o")], capsys)
    assert f"90 training / 30 validation images, 3 classes, single-label, validation from {val_file}" in out
    row = json.loads((tmp_path / "o" / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["val_images"] == 30


def test_a_saved_hugging_face_dataset_trains_without_copying_images(pngs, tmp_path):
    datasets = pytest.importorskip("datasets")
    root, rows = pngs
    names = sorted(set(NAMES.values()))
    ds = datasets.Dataset.from_dict(
        {"picture": [str(root / p) for p, _ in rows], "digit": [names.index(c) for _, c in rows]},
        features=datasets.Features({"picture": datasets.Image(), "digit": datasets.ClassLabel(names=names)}))
    ds.train_test_split(test_size=0.25, seed=0)["train"].save_to_disk(str(tmp_path / "ds"))
    result = train(**{**TINY, "batch_size": 16},
                   model="vit_digits", hf_dataset=str(tmp_path / "ds"), epochs=1, out=str(tmp_path / "o"))
    s = result.report["summary"]
    assert (s["image_column"], s["label_column"], s["kind"]) == ("picture", "digit", "single-label")
    assert s["train_images"] + s["val_images"] == 90 and result.report["classes"] == names
    assert result.report["final_val_top1"] is not None


@pytest.mark.parametrize("argv, message", [
    (["some_folder", "--labels", "x.csv"], "Give one data source, not data and labels"),
    (["--val-labels", "v.csv"], "give --labels too"),
    (["--image-column", "img"], "give --hf-dataset too"),
    (["--labels", "/no/such/labels.csv"], "no such file"),
])
def test_bad_source_settings_fail_in_one_line(argv, message, tmp_path, capsys):
    assert main(["train", *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
