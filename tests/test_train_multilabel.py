"""Multi-label training: pairs of digits side by side from a label file, mAP/F1 validation (checked against
scikit-learn on the exported model), best checkpoint by mAP, sigmoid predictions from the saved model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score, f1_score

import vitkit
from test_train_common import TINY, TINY_ARGS, one_thread  # noqa: F401 (fixture)
from test_train_dist import DETERMINISTIC, DETERMINISTIC_ARGS, _run_group
from vitkit.cli import main
from vitkit.data.digits import load_digits_images
from vitkit.errors import ConfigError
from vitkit.processor import ImageProcessor
from vitkit.training import train

pytestmark = pytest.mark.usefixtures("one_thread")
CLASSES = ["0", "1", "2", "3"]


def _pairs(root: Path, n: int, seed: int) -> list[tuple[str, list[str]]]:
    """``n`` 32x32 images of two 16x16 digits (0-3) side by side (the same digit twice is one label)."""
    images, labels = load_digits_images(16)
    by_digit = {d: [img for img, y in zip(images, labels) if y == d] for d in range(4)}
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        a, b = (int(v) for v in rng.integers(0, 4, size=2))
        canvas = Image.new("RGB", (32, 32))
        for slot, d in enumerate((a, b)):
            canvas.paste(by_digit[d][int(rng.integers(len(by_digit[d])))], (16 * slot, 8))
        name = f"s{seed}_{i}.png"
        canvas.save(root / name)
        rows.append((name, sorted({str(a), str(b)})))
    return rows


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[list[str]]]:
    root = tmp_path_factory.mktemp("pairs")
    train_rows, val_rows = _pairs(root, 480, seed=0), _pairs(root, 120, seed=1)
    (root / "train.csv").write_text("path,labels\n" + "".join(f"{p},{';'.join(ls)}\n" for p, ls in train_rows))
    (root / "val.jsonl").write_text("".join(json.dumps({"path": p, "labels": ls}) + "\n" for p, ls in val_rows))
    return root / "train.csv", root / "val.jsonl", [ls for _, ls in val_rows]


@pytest.fixture(scope="module")
def run(files, tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("run")
    train_file, val_file, _ = files
    train(**{**TINY, "plots": True},
          model="vit_digits", labels=str(train_file), val_labels=str(val_file), epochs=4, aug="none", hflip=0.0,
          crop_scale=(0.9, 1.0), label_smoothing=0.0, out=str(out))
    return out


def test_metrics_are_map_and_f1_and_the_best_checkpoint_is_the_best_map(run: Path):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all({"val_mAP", "val_f1_micro", "val_f1_macro", "val_loss"} <= set(r) for r in rows)
    assert not any("val_top1" in r for r in rows)
    report = json.loads((run / "report.json").read_text())
    maps = [r["val_mAP"] for r in rows]
    assert report["best_metric"] == "val_mAP" and report["best_val_mAP"] == max(maps)
    assert report["best_epoch"] == 1 + maps.index(max(maps)) and "best_val_top1" not in report
    assert report["summary"]["kind"] == "multi-label" and report["summary"]["loss"] == "bce"
    assert rows[-1]["val_mAP"] > 0.75  # four classes: chance gives ~0.5
    assert (run / "accuracy.png").is_file() and not (run / "confusion_matrix.png").exists()


def test_the_exported_model_is_multi_label_and_its_metrics_match_scikit_learn(run: Path, files):
    _, val_file, val_labels = files
    model = vitkit.from_pretrained(run / "last").eval()
    assert model.pretrained_cfg.multi_label and list(model.pretrained_cfg.label_names) == CLASSES
    proc = ImageProcessor.from_model(model)
    paths = [val_file.parent / json.loads(line)["path"] for line in val_file.read_text().splitlines()]
    with torch.no_grad():
        scores = model(torch.stack([proc.preprocess_one(Image.open(p).convert("RGB")) for p in paths])).sigmoid()
    y = np.array([[c in ls for c in CLASSES] for ls in val_labels], dtype=int)
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["val_mAP"] == pytest.approx(average_precision_score(y, scores.numpy(), average="macro"), abs=1e-5)
    pred = (scores.numpy() > 0.5).astype(int)
    assert row["val_f1_micro"] == pytest.approx(f1_score(y, pred, average="micro"), abs=1e-6)
    assert row["val_f1_macro"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0), abs=1e-6)


def test_eval_run_scores_the_runs_own_label_files_with_map(run: Path, capsys: pytest.CaptureFixture):
    """`vitkit eval --run` reads the run's data (its label files, not the bundled digits) and scores a multi-label
    run as training did: the best checkpoint's mAP equals the report's best."""
    assert main(["eval", "--run", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    report = json.loads((run / "report.json").read_text())
    assert result["val_images"] == 120 and result["val_mAP"] == pytest.approx(report["best_val_mAP"], abs=1e-6)


def test_predict_gives_sigmoid_scores_above_the_threshold(run: Path, files, capsys: pytest.CaptureFixture):
    _, val_file, _ = files
    image = val_file.parent / json.loads(val_file.read_text().splitlines()[0])["path"]
    assert main(["predict", str(image), "--model", str(run / "last"), "--json", "--threshold", "0.3"]) == 0
    answer = json.loads(capsys.readouterr().out)[0]
    assert answer["threshold"] == 0.3 and answer["labels"]
    above = {p["label"] for p in answer["labels"]}
    assert all(p["probability"] > 0.3 for p in answer["labels"]) and above <= set(CLASSES)
    # sigmoid scores: independent per class; every class not listed scores at most the threshold
    assert all(p["probability"] <= 0.3 for p in answer["predictions"] if p["label"] not in above)


def test_forced_multi_label_on_single_label_digits_and_asl(tmp_path: Path, capsys: pytest.CaptureFixture):
    assert main(["train", *TINY_ARGS, "--multi-label", "--loss", "asl", "--epochs", "1", "--no-plots",
                 "--export-samples", "0", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "multi-label (1 labels per image)" in out and "mAP" in out and "F1 micro" in out and "best mAP" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["best_metric"] == "val_mAP" and report["summary"]["loss"] == "asl"
    assert vitkit.from_pretrained(tmp_path / "best").pretrained_cfg.multi_label


@pytest.mark.parametrize("settings, message", [
    (dict(multi_label=True, mixup=0.2), "not available for multi-label"),
    (dict(multilabel_loss="focal"), "multilabel_loss='focal'"),
    (dict(threshold=1.5), "threshold=1.5"),
])
def test_bad_multi_label_settings(settings: dict, message: str, tmp_path: Path):
    with pytest.raises(ConfigError, match=message):
        train(**TINY, model="vit_digits", epochs=1, out=str(tmp_path), **settings)


@pytest.mark.slow  # two ranks, about 18 s (tests/test_train_dist.py keeps a two-rank run in the default one)
def test_two_ranks_gather_every_validation_row(tmp_path: Path):
    ddp_out, single_out = tmp_path / "ddp", tmp_path / "single"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "vitkit", "train",
           *DETERMINISTIC_ARGS, "--multi-label", "--epochs", "1", "--out", str(ddp_out)]
    proc = _run_group(cmd, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    train(**DETERMINISTIC, multi_label=True, epochs=1, out=str(single_out))
    d_row = json.loads((ddp_out / "metrics.jsonl").read_text().splitlines()[-1])
    s_row = json.loads((single_out / "metrics.jsonl").read_text().splitlines()[-1])
    assert d_row["val_images"] == s_row["val_images"] == 359  # both ranks' rows (180 + 179) in one mAP
    # the weights differ by float-sum order only (~1e-4, as for DDP's top-1 test)
    for key in ("val_mAP", "val_f1_micro", "val_f1_macro", "val_loss"):
        assert d_row[key] == pytest.approx(s_row[key], abs=5e-3), key
