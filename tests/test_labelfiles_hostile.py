"""Label files a stranger wrote: bounded reads, one line errors, each image once, odd paths skipped and counted."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from vitkit.cli import main
from vitkit.data import datasets
from vitkit.data.labelfiles import collate_multilabel, load_label_splits, read_label_file
from vitkit.errors import DataError


@pytest.fixture
def images(tmp_path) -> Path:
    for i in range(6):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / f"{i}.png")
    return tmp_path


def test_a_field_beyond_the_csv_limit_is_refused_naming_its_line(images):
    (images / "l.csv").write_text("path,label\n0.png,a\n1.png," + "x" * 200_000 + "\n")
    with pytest.raises(DataError, match=r"l\.csv.*line 3.*CSV"):
        read_label_file(images / "l.csv")


def test_a_deeply_nested_jsonl_line_is_refused_naming_its_line(images):
    deep = '{"path": "0.png", "label": ' + "[" * 50_000 + "]" * 50_000 + "}"
    (images / "l.jsonl").write_text('{"path": "1.png", "label": "a"}\n' + deep + "\n")
    with pytest.raises(DataError, match=r"l\.jsonl.*line 2"):
        read_label_file(images / "l.jsonl")


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_a_label_file_that_is_no_regular_file_is_refused_at_once(tmp_path, kind):
    path = tmp_path / "l.csv"
    os.mkfifo(path) if kind == "fifo" else path.mkdir() if kind == "folder" else path.symlink_to("/dev/zero")
    with pytest.raises(DataError, match={"fifo": "FIFO", "device": "device", "folder": "is a folder"}[kind]):
        read_label_file(path)


def test_conflicting_rows_are_refused_naming_both_lines(images):
    (images / "l.csv").write_text("path,label\n0.png,a\n1.png,b\n./0.png,b\n")
    with pytest.raises(DataError, match=r"line 4: '\./0\.png' is listed again .*line 2"):
        read_label_file(images / "l.csv")


def test_exact_duplicates_are_used_once_with_a_warning_and_never_split(images, caplog):
    rows = [f"{i}.png,{'ab'[i % 2]}" for i in range(6)] * 3
    (images / "l.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING):
        splits = load_label_splits(images / "l.csv", val_fraction=0.5, seed=0)
    assert "listed more than once" in caplog.text
    assert len(splits.train) + len(splits.val) == 6 and set(splits.train.items).isdisjoint(splits.val.items)


def test_odd_paths_are_skipped_and_counted_like_missing_files(images):
    os.mkfifo(images / "pipe.png")
    (images / "folder.png").mkdir()
    lines = ["0.png,a", "1.png,b", "x" * 5000 + ".png,a", "pipe.png,a", "folder.png,b", "http://127.0.0.1:9/x.png,a",
             "missing.png,a"]
    (images / "l.csv").write_text("path,label\n" + "\n".join(lines) + "\n")
    data = read_label_file(images / "l.csv")
    assert len(data.images) == 2 and len(data.skipped) == 5
    assert any("line 4" in s and "File name too long" in s for s in data.skipped)
    assert any("pipe.png" in s and "not a regular file" in s for s in data.skipped)


def test_jsonl_nan_is_not_a_label(images):
    (images / "l.jsonl").write_text(json.dumps({"path": "0.png", "label": "a"}) + '\n{"path": "1.png", "label": NaN}\n')
    with pytest.raises(DataError, match="line 2"):
        read_label_file(images / "l.jsonl")


def _peak_rss_growth(fn):
    """(fn's result, the growth of this process's peak resident memory while it ran, in bytes): the kernel's
    high-water mark is reset first (``/proc/self/clear_refs``), so an earlier peak does not hide this one."""
    def rss(field: str) -> int:
        line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith(field))
        return int(line.split()[1]) * 1024

    Path("/proc/self/clear_refs").write_text("5")
    before = rss("VmRSS:")
    result = fn()
    return result, rss("VmHWM:") - before


def test_a_small_multi_label_file_with_a_class_per_line_costs_its_size_not_its_square(tmp_path):
    # ~200 KB: 13,000 images, each of its own class; dense (K,) targets per image would be 13,000^2 floats (676 MB)
    Image.new("RGB", (8, 8)).save(tmp_path / "img.png")
    n = 13_000
    for i in range(n):
        os.symlink("img.png", tmp_path / f"{i}.png")
    (tmp_path / "l.csv").write_text("path,labels\n" + "".join(f"{i}.png,c{i}\n" for i in range(n)))
    data, growth = _peak_rss_growth(lambda: read_label_file(tmp_path / "l.csv"))
    assert len(data.classes) == n and data.describe()["labels_per_image"] == 1.0
    assert growth < 100 * 2**20, f"reading a {n}-line label file grew the peak memory by {growth / 2**20:.0f} MB"
    # the dense targets exist for a batch only, and say the same as the file
    targets = data.images.labels
    batch = torch.stack([targets[i] for i in (0, 1, n - 1)])
    assert batch.shape == (3, n) and batch.sum(1).tolist() == [1.0] * 3
    assert [data.classes[int(t.argmax())] for t in batch] == ["c0", "c1", f"c{n - 1}"]
    val = load_label_splits(tmp_path / "l.csv", val_fraction=0.1).val
    x, y, _ = collate_multilabel([(torch.zeros(1), val.labels[i], 0) for i in range(4)])
    assert y.shape == (4, n) and y.dtype == torch.float32


def test_more_classes_than_the_limit_is_one_line_naming_the_file_and_the_way_out(images, monkeypatch, capsys):
    monkeypatch.setattr(datasets.LIMITS, "max_classes", 5)
    (images / "l.csv").write_text("path,labels\n" + "".join(f"{i}.png,c{i}\n" for i in range(6)))
    with pytest.raises(DataError, match=r"l\.csv' has 6 classes, more than the limit of 5.*VITKIT_DATA_LIMITS"):
        read_label_file(images / "l.csv")
    assert main(["train", "--labels", str(images / "l.csv"), "--out", str(images / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "more than the limit of 5" in err[0] and not (images / "run").exists()
    (images / "five.csv").write_text("path,label\n" + "".join(f"{i}.png,c{i}\n" for i in range(5)))
    assert len(read_label_file(images / "five.csv").classes) == 5  # the limit itself is allowed


def test_the_default_class_limit_holds_imagenet_21k():
    datasets.check_class_count(21_843, "ImageNet-21k")
    with pytest.raises(DataError, match="VITKIT_DATA_LIMITS=max_classes=N"):
        datasets.check_class_count(datasets.LIMITS.max_classes + 1, "x")
