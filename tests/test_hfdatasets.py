"""Hugging Face datasets saved with save_to_disk, over real digit images: columns, splits, laziness."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vitkit.data.datasets import TransformedImages
from vitkit.data.digits import load_digits_images
from vitkit.data.hfdatasets import HFImages, load_hf_splits, read_hf_dataset
from vitkit.data.labelfiles import MultiLabelImages, collate_multilabel, is_multi_label
from vitkit.errors import DataError

datasets = pytest.importorskip("datasets")  # in the test extra; the library itself only needs it when used
NAMES = ["zero", "one", "two", "three"]
N = 40


@pytest.fixture(scope="module")
def digits():
    images, labels = load_digits_images(16)
    picked = [i for i, y in enumerate(labels) if y < 4][:N]
    return [images[i] for i in picked], [labels[i] for i in picked]


def _tags(y: int) -> list[int]:
    return [y, (y + 1) % 4] if y % 2 else [y]  # odd digits carry two classes


def _features(**extra):
    return datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES),
                              "tags": datasets.List(datasets.ClassLabel(names=NAMES)), **extra})


def _save(tmp_path: Path, digits, name: str = "ds") -> Path:
    images, labels = digits
    ds = datasets.Dataset.from_dict({"image": images, "label": labels, "tags": [_tags(y) for y in labels]},
                                    features=_features())
    ds.save_to_disk(str(tmp_path / name))
    return tmp_path / name


def _pixels(img) -> np.ndarray:
    return np.asarray(img.convert("RGB"))


def test_single_label_columns_are_found_and_images_read_lazily(tmp_path, digits):
    path = _save(tmp_path, digits)
    src = read_hf_dataset(path, label_column="label")
    assert src.image_column == "image" and src.classes == NAMES and not src.multi_label
    assert isinstance(src.images, HFImages) and src.images.labels == digits[1]
    assert src.images.items == list(range(N))  # row numbers, not image copies
    cache = {Path(f["filename"]).parent for f in src.images.dataset.cache_files}
    assert cache == {path.resolve()}  # memory-mapped from the saved folder
    for i in (0, 7, N - 1):
        assert np.array_equal(_pixels(src.images.load(i)), _pixels(digits[0][i]))
    assert src.describe() == {"source": str(path), "images": N, "classes": 4, "kind": "single-label",
                              "image_column": "image", "label_column": "label", "skipped": 0}


def test_two_label_columns_need_a_name(tmp_path, digits):
    path = _save(tmp_path, digits)
    with pytest.raises(DataError, match=r"cannot tell its label column \(several \(label, tags\) found"):
        read_hf_dataset(path)
    with pytest.raises(DataError, match="has no column 'labl'; its columns: image, label, tags"):
        read_hf_dataset(path, label_column="labl")


def test_sequence_of_classlabel_is_multi_label(tmp_path, digits):
    src = read_hf_dataset(_save(tmp_path, digits), label_column="tags")
    assert src.multi_label and isinstance(src.images, MultiLabelImages)
    for y, target in zip(digits[1], src.images.labels):
        assert target.nonzero().flatten().tolist() == sorted(_tags(y))
    data = TransformedImages(src.images, lambda img, e, i: torch.from_numpy(_pixels(img).copy()))
    x, targets, skipped = collate_multilabel([data[i] for i in range(5)])
    assert x.shape == (5, 16, 16, 3) and targets.shape == (5, 4) and targets.dtype == torch.float32 and skipped == 0


def test_dataset_dict_uses_its_validation_split(tmp_path, digits):
    images, labels = digits
    split = {"train": (images[:30], labels[:30]), "validation": (images[30:], labels[30:])}
    dd = datasets.DatasetDict({k: datasets.Dataset.from_dict({"image": im, "label": lb, "tags": [_tags(y) for y in lb]},
                                                            features=_features()) for k, (im, lb) in split.items()})
    dd.save_to_disk(str(tmp_path / "dd"))
    splits = load_hf_splits(tmp_path / "dd", label_column="label")
    assert (len(splits.train), len(splits.val)) == (30, 10) and splits.classes == NAMES
    assert np.array_equal(_pixels(splits.val.load(0)), _pixels(images[30]))
    with pytest.raises(DataError, match=r"has no split 'test'; its splits: train, validation"):
        read_hf_dataset(tmp_path / "dd", split="test", label_column="label")


def test_without_a_validation_split_a_fraction_is_held_out(tmp_path, digits):
    path = _save(tmp_path, digits)
    splits = load_hf_splits(path, label_column="label", val_fraction=0.25, seed=0)
    assert len(splits.train) + len(splits.val) == N and 8 <= len(splits.val) <= 12  # a quarter of each class
    assert set(splits.val.labels) == {0, 1, 2, 3}
    i = splits.val.items[0]
    assert np.array_equal(_pixels(splits.val.load(0)), _pixels(digits[0][i]))
    multi = load_hf_splits(path, label_column="tags", val_fraction=0.25)
    assert is_multi_label(multi) and isinstance(multi.val, MultiLabelImages) and len(multi.val) == 10


def test_plain_label_values_are_sorted_and_unlabelled_rows_skipped(tmp_path, digits):
    images, labels = digits
    names = [NAMES[y] for y in labels]
    names[3] = None
    ds = datasets.Dataset.from_dict({"picture": images, "label": names},
                                    features=datasets.Features({"picture": datasets.Image(),
                                                                "label": datasets.Value("string")}))
    ds.save_to_disk(str(tmp_path / "plain"))
    src = read_hf_dataset(tmp_path / "plain")
    assert src.image_column == "picture" and src.classes == sorted(NAMES)
    assert len(src.images) == N - 1 and src.skipped == ["row 3: no label"]
    assert [src.classes[y] for y in src.images.labels] == [n for n in names if n is not None]


def test_clear_errors_for_missing_folder_and_missing_package(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="does not exist"):
        read_hf_dataset(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is not a dataset saved with save_to_disk"):
        read_hf_dataset(tmp_path / "empty")
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(DataError, match="pip install datasets"):
        read_hf_dataset(tmp_path / "empty")
