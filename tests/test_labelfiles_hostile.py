"""Label files a stranger wrote: bounded reads, one line errors, each image once, odd paths skipped and counted."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from PIL import Image

from vitkit.data.labelfiles import load_label_splits, read_label_file
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


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_label_file_that_is_no_regular_file_is_refused_at_once(tmp_path, kind):
    path = tmp_path / "l.csv"
    os.mkfifo(path) if kind == "fifo" else path.symlink_to("/dev/zero")
    with pytest.raises(DataError, match="FIFO" if kind == "fifo" else "device"):
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
