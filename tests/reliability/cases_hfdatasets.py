"""Hostile Hugging Face ``save_to_disk`` folders (``vitkit train --hf-dataset``): ``state.json`` naming data files
outside the folder, missing or of the wrong type; JSON files that are FIFOs, devices, deep or not objects;
split lists that leave the folder; ClassLabel names fewer than the values; image features changed to
another type; damaged Arrow files; too many classes; and image cells that are URLs, FIFOs, paths outside
the folder or garbage (skipped and counted, nothing fetched or read outside) beside a 20000x1 strip (read:
only its crop is resized). Every case
ends in one error, or loads the rows it should with the readable images it should.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corpus import HOSTILE_VALUES, Case, replace_file
from PIL import Image

CATEGORY = "HF dataset folders"
Make = Callable[[], dict[str, Any]]
NAMES = ["a", "b"]
ROWS = 6


def act_hfdataset(case: dict[str, Any]) -> str:
    """Load the training and validation splits and read every image, as a training run would."""
    import torch

    from vitkit.data import datasets
    from vitkit.data.hfdatasets import load_hf_splits
    from vitkit.data.labelfiles import is_multi_label

    limit = datasets.LIMITS.max_classes
    datasets.LIMITS.max_classes = case.get("max_classes", limit)
    try:
        splits = load_hf_splits(case["path"], val_fraction=0.34, seed=0, **case.get("kwargs", {}))
    finally:
        datasets.LIMITS.max_classes = limit
    images = [split.load(i) for split in (splits.train, splits.val) for i in range(len(split))]
    batch = [splits.train.labels[i] for i in range(min(4, len(splits.train)))]
    if is_multi_label(splits):
        torch.stack(batch)  # (B, K)
    counts = {"rows": len(images), "readable": sum(img is not None for img in images),
              "classes": len(splits.classes)}
    return "loaded" if all(counts[k] == case[k] for k in counts if k in case) else "loaded-different"


ACTIONS = {"hfdataset": act_hfdataset}


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


class _Bases:
    """Pristine folders (built once): single-label, multi-label, a DatasetDict, and one whose image cells hold
    paths and hostile bytes (written as a stranger could: the struct, then the feature declared Image)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, name: str) -> Path:
        path = self.root / "bases" / name
        if not path.exists():
            getattr(self, f"_{name.replace('-', '_')}")(path)
        return path

    @staticmethod
    def _images() -> list[Image.Image]:
        return [Image.new("RGB", (8, 8), (i * 40, 100, 0)) for i in range(ROWS)]

    def _single(self, path: Path) -> None:
        import datasets

        feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES)})
        data = {"image": self._images(), "label": [i % 2 for i in range(ROWS)]}
        datasets.Dataset.from_dict(data, features=feats).save_to_disk(str(path))

    def _multi(self, path: Path) -> None:
        import datasets

        feats = datasets.Features({"image": datasets.Image(),
                                   "labels": datasets.List(datasets.ClassLabel(names=NAMES))})
        labels = [[0, -1], [1], [-1], [0, 1], [1, -1], []]  # -1: ClassLabel's "no label", inside a list too
        datasets.Dataset.from_dict({"image": self._images(), "labels": labels}, features=feats).save_to_disk(str(path))

    def _dict(self, path: Path) -> None:
        import datasets

        feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES)})
        split = datasets.Dataset.from_dict({"image": self._images(), "label": [i % 2 for i in range(ROWS)]},
                                           features=feats)
        datasets.DatasetDict({"train": split, "validation": split}).save_to_disk(str(path))

    def _cells(self, path: Path) -> None:
        import datasets

        path.mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(path / "inside.png")  # (pipe.png, a FIFO, is made by each case)
        (self.root / "outside.png").parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(self.root / "outside.png")
        cells = [{"bytes": _png(Image.new("RGB", (8, 8))), "path": None}, {"bytes": None, "path": "inside.png"},
                 {"bytes": None, "path": "http://127.0.0.1:9/x.png"}, {"bytes": None, "path": "pipe.png"},
                 {"bytes": None, "path": str(self.root / "outside.png")}, {"bytes": None, "path": "../../outside.png"},
                 {"bytes": _png(Image.new("L", (20000, 1))), "path": None}, {"bytes": b"\x89PNG garbage", "path": None},
                 {"bytes": None, "path": "/etc/passwd"}, {"bytes": None, "path": None}]
        struct = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}
        feats = datasets.Features({"image": struct, "label": datasets.ClassLabel(names=NAMES)})
        data = {"image": cells, "label": [i % 2 for i in range(len(cells))]}
        datasets.Dataset.from_dict(data, features=feats).save_to_disk(str(path))
        info = json.loads((path / "dataset_info.json").read_text())
        info["features"]["image"] = {"_type": "Image"}
        (path / "dataset_info.json").write_text(json.dumps(info))


def _case(bases: _Bases, base: str, name: str, damage: Callable[[Path], Any], **spec: Any) -> Make:
    def make() -> dict[str, Any]:
        folder = bases.root / "cases" / name
        shutil.copytree(bases.folder(base), folder, symlinks=True)
        damage(folder)
        return {"path": str(folder), **spec}
    return make


def _edit_json(file: str, edit: Callable[[Any], Any]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        path = folder / file
        data = json.loads(path.read_text())
        result = edit(data)
        path.write_text(json.dumps(data if result is None else result))
    return damage


def _set(file: str, key: str, value: Any) -> Callable[[Path], None]:
    def edit(data: dict[str, Any]) -> None:
        node = data
        *parents, last = key.split(".")
        for k in parents:
            node = node[k]
        node[last] = value
    return _edit_json(file, edit)


def _outside_data_file(folder: Path) -> None:
    """A sound Arrow file outside the folder, named by state.json as ../outside/secret.arrow."""
    outside = folder.parent / "outside"
    outside.mkdir(exist_ok=True)
    shutil.copy(folder / "data-00000-of-00001.arrow", outside / "secret.arrow")
    _set("state.json", "_data_files", [{"filename": "../outside/secret.arrow"}])(folder)


def _arrow(how: str) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        path = folder / "data-00000-of-00001.arrow"
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2] if how == "truncate" else bytes(len(data)))
    return damage


def _fifo_cell(folder: Path) -> None:
    """The FIFO an image cell names (in the folder of hostile cells only)."""
    if (folder / "inside.png").exists():
        os.mkfifo(folder / "pipe.png")


def _other_val_names(folder: Path) -> None:
    _set("validation/dataset_info.json", "features.label.names", ["x", "y"])(folder)


def cases(root: Path, rng: random.Random) -> list[Case]:
    bases = _Bases(root)
    info, state = "dataset_info.json", "state.json"
    refused: dict[str, tuple[str, Callable[[Path], Any], dict[str, Any]]] = {
        "data-files-missing": ("single", _edit_json(state, lambda d: d.pop("_data_files")), {}),
        "data-files-empty": ("single", _set(state, "_data_files", []), {}),
        "data-files-string": ("single", _set(state, "_data_files", "data.arrow"), {}),
        "data-file-outside": ("single", _outside_data_file, {}),
        "data-file-absolute": ("single", _set(state, "_data_files", [{"filename": "/etc/passwd"}]), {}),
        "data-file-number": ("single", _set(state, "_data_files", [{"filename": 5}]), {}),
        "data-file-nul": ("single", _set(state, "_data_files", [{"filename": "a\x00.arrow"}]), {}),
        "data-file-missing": ("single", _set(state, "_data_files", [{"filename": "nope.arrow"}]), {}),
        "state-deep": ("single", replace_file(state, "text", "[" * 100_000 + "]" * 100_000), {}),
        "state-not-json": ("single", replace_file(state, "text", b"\xff\xfe{"), {}),
        "info-deep": ("single", replace_file(info, "text", "{\"a\":" * 50_000 + "1" + "}" * 50_000), {}),
        "info-not-an-object": ("single", replace_file(info, "text", "[1, 2]"), {}),
        "class-label-fewer-names": ("single", _set(info, "features.label.names", ["a"]), {}),
        "image-feature-a-string": ("single", _set(info, "features.image", {"dtype": "string", "_type": "Value"}), {}),
        "image-feature-an-int": ("single", _set(info, "features.image", {"dtype": "int64", "_type": "Value"}), {}),
        "image-column-the-labels": ("single", lambda f: None, {"kwargs": {"image_column": "label"}}),
        "label-column-unknown": ("single", lambda f: None, {"kwargs": {"label_column": "nope"}}),
        "arrow-truncated": ("single", _arrow("truncate"), {}),
        "arrow-zeroed": ("single", _arrow("zero"), {}),
        "too-many-classes": ("single", lambda f: None, {"max_classes": 1}),
        "splits-leave-the-folder": ("dict", _set("dataset_dict.json", "splits", ["../../bases/single"]), {}),
        "splits-not-a-list": ("dict", _set("dataset_dict.json", "splits", "train"), {}),
        "split-folder-missing": ("dict", lambda f: shutil.rmtree(f / "validation"), {}),
        "val-split-other-names": ("dict", _other_val_names, {}),
    }
    out = [Case(f"hf/{name}", CATEGORY, "hfdataset", "error", _case(bases, base, name, damage, **spec))
           for name, (base, damage, spec) in refused.items()]
    isolated = {"state-fifo": replace_file(state, "fifo"), "state-dev-zero": replace_file(state, "link", "/dev/zero"),
                "info-fifo": replace_file(info, "fifo"),
                "data-file-fifo": replace_file("data-00000-of-00001.arrow", "fifo")}
    out += [Case(f"hf/{name}", CATEGORY, "hfdataset", "error", _case(bases, "single", name, damage), isolate=True)
            for name, damage in isolated.items()]
    loaded = {
        "single": ("single", {"rows": ROWS, "readable": ROWS, "classes": 2}),
        "multi-label-no-label-inside-lists": ("multi", {"rows": ROWS, "readable": ROWS, "classes": 2}),
        "dataset-dict": ("dict", {"rows": 2 * ROWS, "readable": 2 * ROWS}),
        # 10 cells: embedded bytes, the file inside and the strip read; URL, FIFO, outside paths, garbage skipped
        "hostile-cells-skipped-and-counted": ("cells", {"rows": 10, "readable": 3}),
    }
    out += [Case(f"hf/{name}", CATEGORY, "hfdataset", "ok", _case(bases, base, name, _fifo_cell, **spec),
                 isolate=base == "cells") for name, (base, spec) in loaded.items()]
    out.append(Case("hf/hostile-cells-allowed-outside", CATEGORY, "hfdataset", "ok",
                    _case(bases, "cells", "cells-outside", _fifo_cell, rows=10, readable=5,
                          kwargs={"allow_outside_images": True}), isolate=True))
    return out + _field_mutations(bases)


def _field_mutations(bases: _Bases) -> list[Case]:
    """Every top-level field of state.json and dataset_info.json (and each feature) replaced by hostile values."""
    fields = ["_data_files", "_fingerprint", "_format_columns", "_format_kwargs", "_format_type",
              "_output_all_columns", "_split"]
    keys = [("state.json", k) for k in fields]
    keys += [("dataset_info.json", k) for k in ("citation", "description", "features", "homepage", "license",
                                                "features.image", "features.label", "features.label.names")]
    return [Case(f"hf/{file}:{key}={j}", CATEGORY, "hfdataset", "either",
                 _case(bases, "single", f"field-{file}-{key}-{j}", _set(file, key, value)), bulk=True)
            for file, key in keys for j, value in enumerate(HOSTILE_VALUES)]
