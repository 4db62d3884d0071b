"""Training data: the bundled digits, image folders (split or not), stratified splits, unreadable files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitkit.data.datasets import (
    TransformedImages,
    collate_skipping,
    load_folder,
    load_splits,
    stratified_split,
)
from vitkit.data.digits import DIGITS_CLASSES, export_samples, load_digits_images
from vitkit.errors import DataError


def _write_folder(root: Path, classes: dict[str, int], size: int = 12) -> None:
    rng = np.random.default_rng(0)
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / name / f"{i}.png")


def test_digits_are_small_rgb_images_with_a_seeded_stratified_split():
    images, labels = load_digits_images(32)
    assert len(images) == len(labels) == 1797
    assert images[0].size == (32, 32) and images[0].mode == "RGB"
    assert sorted(set(labels)) == list(range(10))
    splits = load_splits(None, val_fraction=0.2, seed=0)
    assert splits.classes == list(DIGITS_CLASSES)
    assert len(splits.train) + len(splits.val) == 1797
    assert abs(len(splits.val) - 0.2 * 1797) <= 10
    again = load_splits(None, val_fraction=0.2, seed=0)
    assert again.val.labels == splits.val.labels and [np.asarray(i).sum() for i in again.val.items[:20]] == \
        [np.asarray(i).sum() for i in splits.val.items[:20]]
    other = load_splits(None, val_fraction=0.2, seed=1)
    assert [np.asarray(i).sum() for i in other.val.items[:20]] != [np.asarray(i).sum() for i in splits.val.items[:20]]
    # every class is held out in proportion
    counts = np.bincount(splits.val.labels, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38


def test_stratified_split_keeps_one_of_each_class_out_and_in():
    labels = [0] * 10 + [1] * 2 + [2]
    train, val = stratified_split(labels, 0.2, seed=3)
    assert sorted(train + val) == list(range(13))
    assert [labels[i] for i in val].count(0) == 2 and [labels[i] for i in val].count(1) == 1
    assert 12 in train  # a class with one image stays in training
    with pytest.raises(DataError, match="between 0 and 1"):
        stratified_split(labels, 1.5, seed=0)


def test_folder_with_train_and_val(tmp_path: Path):
    _write_folder(tmp_path / "train", {"cat": 4, "dog": 3})
    _write_folder(tmp_path / "val", {"cat": 2, "dog": 1})
    splits = load_folder(tmp_path)
    assert splits.classes == ["cat", "dog"]
    assert (len(splits.train), len(splits.val)) == (7, 3)
    assert splits.val.labels == [0, 0, 1]


def test_folder_split_by_fraction_and_unreadable_files_skipped(tmp_path: Path):
    _write_folder(tmp_path, {"a": 5, "b": 5})
    (tmp_path / "a" / "junk.png").write_bytes(b"not an image at all")
    (tmp_path / "b" / "notes.txt").write_text("hello")
    good = (tmp_path / "b" / "0.png").read_bytes()
    (tmp_path / "b" / "truncated.png").write_bytes(good[: len(good) // 2])  # a header, half the data
    splits = load_folder(tmp_path, val_fraction=0.4, seed=0)
    assert len(splits.skipped) == 2  # junk.png and notes.txt fail the header check
    assert len(splits.train) + len(splits.val) == 11
    for replace in (False, True):
        skipped_total = 0
        for part in (splits.train, splits.val):
            data = TransformedImages(part, lambda img, epoch, index: torch.zeros(3, 4, 4), replace_unreadable=replace)
            x, y, skipped = collate_skipping([data[i] for i in range(len(data))])
            kept = len(data) if replace else len(data) - skipped  # training keeps batches full with a stand-in
            assert x.shape == (kept, 3, 4, 4) and y.shape == (kept,)
            skipped_total += skipped
        assert skipped_total == 1  # the truncated PNG fails when decoded, and is counted, not fatal

@pytest.mark.parametrize("layout, match", [
    ("missing", "does not exist"),
    ("no_classes", "no class subfolders"),
    ("empty_class", "holds no readable image"),
    ("val_extra", "classes that train/ lacks"),
])
def test_folder_errors_name_the_problem(tmp_path: Path, layout: str, match: str):
    root = tmp_path / "data"
    if layout == "no_classes":
        root.mkdir()
        (root / "x.png").write_bytes(b"")
    elif layout == "empty_class":
        _write_folder(root, {"a": 2})
        (root / "b").mkdir()
    elif layout == "val_extra":
        _write_folder(root / "train", {"a": 2})
        _write_folder(root / "val", {"a": 1, "z": 1})
    with pytest.raises(DataError, match=match):
        load_folder(root)


def test_collate_of_only_unreadable_images():
    x, y, skipped = collate_skipping([None, None])
    assert skipped == 2 and x.numel() == 0 and y.numel() == 0


def test_export_samples_names_files_by_class(tmp_path: Path):
    images, labels = load_digits_images(32)
    written = export_samples(images[:6], labels[:6], tmp_path)
    assert [p.name for p in written][:3] == [f"{labels[0]}_0.png", f"{labels[1]}_0.png", f"{labels[2]}_0.png"]
    assert Image.open(written[0]).size == (32, 32)
