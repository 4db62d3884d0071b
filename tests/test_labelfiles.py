"""Label files (CSV, JSONL), single- and multi-label, over real digit images written to disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitkit.data.datasets import LabelledImages, TransformedImages, collate_skipping
from vitkit.data.digits import load_digits_images
from vitkit.data.labelfiles import (
    MultiLabelImages,
    collate_multilabel,
    is_multi_label,
    load_label_splits,
    read_label_file,
)
from vitkit.errors import DataError

NAMES = ("zero", "one", "two")


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> tuple[Path, list[tuple[str, int]]]:
    """30 digit images (0-2) under <root>/imgs/, as (relative path, digit)."""
    root = tmp_path_factory.mktemp("digits")
    images, labels = load_digits_images(16)
    picked = [i for i, y in enumerate(labels) if y < 3][:30]
    (root / "imgs").mkdir()
    out = []
    for n, i in enumerate(picked):
        rel = f"imgs/{n:02d}.png"
        images[i].save(root / rel)
        out.append((rel, labels[i]))
    return root, out


def _tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1)  # (H, W, C) -> (C, H, W)


def test_csv_single_label_resolves_paths_and_skips_missing_files(digits, tmp_path):
    root, rows = digits
    elsewhere = tmp_path / "abs.png"
    Image.open(root / rows[0][0]).save(elsewhere)
    lines = ["path,label", *(f"{rel},{NAMES[y]}" for rel, y in rows), f"{elsewhere},two", "imgs/missing.png,one"]
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    data = read_label_file(root / "train.csv")
    assert data.classes == sorted(NAMES) and not data.multi_label
    assert type(data.images) is LabelledImages and len(data.images) == 31
    assert data.images.items[-1] == elsewhere and data.images.labels[-1] == data.classes.index("two")
    assert [data.classes[y] for y in data.images.labels[:30]] == [NAMES[y] for _, y in rows]
    assert len(data.skipped) == 1 and "missing.png (line 33)" in data.skipped[0]
    assert data.images.load(3).mode == "RGB" and data.images.load(3).size == (16, 16)
    assert data.describe() == {"source": str(root / "train.csv"), "images": 31, "classes": 3, "kind": "single-label",
                               "labels_per_image": 1.0, "skipped": 1}
    # the training loop's own dataset and collate take it unchanged
    loader = torch.utils.data.DataLoader(TransformedImages(data.images, lambda img, e, i: _tensor(img)),
                                         batch_size=8, collate_fn=collate_skipping)
    x, y, skipped = next(iter(loader))
    assert x.shape == (8, 3, 16, 16) and y.dtype == torch.long and skipped == 0


def _multi_labels(y: int) -> list[str]:
    """Digit y plus 'odd'/'even' (and 'small' for 0): several classes per image, some images with two."""
    return [NAMES[y], "odd" if y % 2 else "even"] + (["small"] if y == 0 else [])


def test_csv_multi_label_with_both_separators_and_empty_sets(digits):
    root, rows = digits
    lines = ["path,labels"]
    for n, (rel, y) in enumerate(rows):
        sep = ";" if n % 2 else "|"
        lines.append(f"{rel},{sep.join(_multi_labels(y))}")
    Image.open(root / "imgs/00.png").save(root / "imgs/none.png")
    lines.append("imgs/none.png,")  # an image showing none of the classes is allowed
    (root / "multi.csv").write_text("\n".join(lines) + "\n")
    data = read_label_file(root / "multi.csv")
    assert data.multi_label and isinstance(data.images, MultiLabelImages)
    assert data.classes == ["even", "odd", "one", "small", "two", "zero"]
    for (_, y), target in zip(rows, data.images.labels):
        assert target.dtype == torch.float32 and target.shape == (6,)
        assert sorted(data.classes[i] for i in target.nonzero().flatten().tolist()) == sorted(_multi_labels(y))
    assert data.images.labels[-1].sum() == 0
    loader = torch.utils.data.DataLoader(TransformedImages(data.images, lambda img, e, i: _tensor(img)),
                                         batch_size=8, collate_fn=collate_multilabel)
    x, targets, _ = next(iter(loader))
    assert x.shape == (8, 3, 16, 16) and targets.shape == (8, 6) and targets.dtype == torch.float32
    assert torch.equal(targets, torch.stack(data.images.labels[:8]))


def test_jsonl_single_and_multi_label(digits):
    root, rows = digits
    (root / "s.jsonl").write_text("\n".join(json.dumps({"path": rel, "label": y}) for rel, y in rows) + "\n\n")
    single = read_label_file(root / "s.jsonl")
    assert single.classes == ["0", "1", "2"] and single.images.labels == [y for _, y in rows]
    (root / "m.jsonl").write_text("\n".join(json.dumps({"path": rel, "labels": _multi_labels(y)})
                                            for rel, y in rows))
    multi = read_label_file(root / "m.jsonl")
    per_image = float(np.mean([len(_multi_labels(y)) for _, y in rows]))
    assert multi.multi_label and multi.describe()["labels_per_image"] == round(per_image, 3)


def test_class_order_given_and_numeric_sorting(digits, tmp_path):
    root, rows = digits
    (root / "n.csv").write_text("path,label\n" + "".join(f"{rel},{10 if y == 2 else 9}\n" for rel, y in rows))
    assert read_label_file(root / "n.csv").classes == ["9", "10"]
    given = read_label_file(root / "n.csv", classes=["10", "9", "7"])
    assert given.classes == ["10", "9", "7"] and set(given.images.labels) == {0, 1}
    assert rows[0][1] == 0  # the first line names class 9
    with pytest.raises(DataError, match=r"line 2: label '9' is not one of the classes \(10, 7\)"):
        read_label_file(root / "n.csv", classes=["10", "7"])
    forced = read_label_file(root / "n.csv", multi_label=True)
    assert forced.multi_label and all(t.sum() == 1 for t in forced.images.labels)


@pytest.mark.parametrize("name, text, message", [
    ("a.csv", "file,label\nimgs/00.png,one\n", r"line 1: the header is file,label"),
    ("b.csv", "path,label\nimgs/00.png,one\nimgs/01.png,\n", r"line 3: expected exactly one label"),
    ("c.csv", "path,label\nimgs/00.png,one;two\n", r"line 2: expected exactly one label"),
    ("d.jsonl", '{"path": "imgs/00.png", "label": "a"}\n\n{"path": "imgs/01.png", "label": \n',
     r"line 3: not valid JSON"),
    ("e.jsonl", '{"path": "imgs/00.png", "label": "a"}\n{"path": "imgs/01.png", "labels": ["a"]}\n',
     "some lines use 'label' and others 'labels'"),
    ("f.jsonl", '{"path": "imgs/00.png", "label": ["a", "b"]}\n', r"line 1: 'label' holds a list"),
    ("g.jsonl", '{"image": "imgs/00.png", "label": "a"}\n', r"line 1: expected \{\"path\""),
    ("h.csv", "path,label\nnowhere/1.png,one\n", r"none of its 1 images exist"),
    ("missing.csv", None, "no such file"),
])
def test_bad_label_files_name_file_line_and_problem(digits, name, text, message):
    root, _ = digits
    if text is not None:
        (root / name).write_text(text)
    with pytest.raises(DataError, match=message) as info:
        read_label_file(root / name)
    assert name in str(info.value)


def test_multi_label_false_refuses_several_labels(digits):
    root, rows = digits
    (root / "x.csv").write_text("path,labels\n" + "".join(f"{rel},a;b\n" for rel, _ in rows[:2]))
    with pytest.raises(DataError, match="line 2: expected exactly one label"):
        read_label_file(root / "x.csv", multi_label=False)


def test_splits_from_one_file_or_two(digits):
    root, rows = digits
    (root / "all.csv").write_text("path,label\n" + "".join(f"{rel},{NAMES[y]}\n" for rel, y in rows))
    splits = load_label_splits(root / "all.csv", val_fraction=0.2, seed=1)
    assert len(splits.train) + len(splits.val) == 30 and not is_multi_label(splits)
    assert set(splits.val.labels) == {0, 1, 2}  # stratified: every class held out
    assert set(splits.train.items).isdisjoint(splits.val.items)
    (root / "val.csv").write_text("path,label\n" + "".join(f"{rel},{NAMES[y]}\n" for rel, y in rows[:5]))
    two = load_label_splits(root / "all.csv", root / "val.csv")
    assert len(two.train) == 30 and len(two.val) == 5 and two.classes == splits.classes
    (root / "m.csv").write_text("path,labels\n" + "".join(f"{rel},{';'.join(_multi_labels(y))}\n" for rel, y in rows))
    multi = load_label_splits(root / "m.csv", val_fraction=0.3, seed=0)
    assert is_multi_label(multi) and isinstance(multi.val, MultiLabelImages)
    assert (len(multi.train), len(multi.val)) == (21, 9)
    assert multi.describe()["classes"] == 6
