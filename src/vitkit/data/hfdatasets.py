"""Hugging Face ``datasets`` saved on disk (``save_to_disk``), read with ``datasets.load_from_disk``.

The Arrow files are memory-mapped and rows are read on demand: images are decoded one at a time when
the training loop asks for them, never copied. The image column is the one of ``Image`` type (or
named), the label column the one of ``ClassLabel`` type, ``Sequence``/``List`` of ``ClassLabel``
(multi-label), or named ``label``/``labels``; ClassLabel names become the class names, other label
values are sorted. A ``DatasetDict`` gives its ``train`` split and, when present, its validation split
(``validation``, ``val`` or ``valid``); otherwise a seeded fraction is held out.

``datasets`` is optional: ``pip install datasets``.

The folder is often a stranger's, so it is checked before ``datasets`` reads it: ``state.json`` must name
data files inside the folder, JSON files are read bounded. The image column is read undecoded
(``Image(decode=False)``) and decoded by vitkit: embedded bytes with the same size limits as image files,
a path only when it is a regular file inside the dataset folder (``allow_outside_images=True`` or
``VITKIT_HF_ALLOW_OUTSIDE_IMAGES=1`` lifts that), a URL never. A refused image is skipped and counted,
its row and path named.

``vitkit train`` reads one with ``--hf-dataset DIR`` (instead of a folder), ``--image-column NAME`` and
``--label-column NAME``, and ``--val-fraction`` when there is no validation split. The loop calls
``load_hf_splits(...)`` -> ``DataSplits`` and, when ``is_multi_label(splits)`` (``vitkit.data.labelfiles``),
``collate_multilabel``.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import DataError, ImageError, keyword
from ..fileio import parse_json, read_regular_bytes
from .datasets import VAL_DIR_NAMES, DataSplits, LabelledImages, check_class_count, stratified_split
from .images import LIMITS, load_image, to_mode
from .labelfiles import MultiHotTargets, MultiLabelImages, sort_class_names

logger = logging.getLogger(__name__)
IMAGE_COLUMN = keyword("image_column")

LABEL_NAMES = ("label", "labels")
TRAIN_SPLIT = "train"
ALLOW_OUTSIDE_ENV = "VITKIT_HF_ALLOW_OUTSIDE_IMAGES"
MAX_JSON_BYTES = 64 << 20  # state.json, dataset_info.json, dataset_dict.json


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise DataError("Reading a Hugging Face dataset needs the 'datasets' package: pip install datasets") from None
    return datasets


def _decode_bytes(data: bytes) -> Image.Image:
    """Embedded image bytes, with the pixel limit image files get."""
    img = Image.open(io.BytesIO(data))
    width, height = img.size
    if width * height > LIMITS.max_pixels:
        raise ImageError(f"the embedded image is {width}x{height}, beyond the limit of {LIMITS.max_pixels:,} pixels")
    return to_mode(img, "RGB")


def _image_path(name: str, folder: Path, allow_outside: bool) -> Path:
    """The file an image cell names, refused when it is a URL or (unless allowed) outside the dataset folder."""
    if "://" in name or name.startswith(("hf:", "s3:", "gs:")):
        raise ImageError(f"the image path {name[:200]!r} is a URL; vitkit does not fetch images while training")
    path = Path(name) if os.path.isabs(name) else folder / name
    inside = os.path.realpath(path).startswith(os.path.realpath(folder) + os.sep)
    if not (inside or allow_outside):
        raise ImageError(f"the image path {name[:200]!r} is outside the dataset folder {str(folder)!r} (pass "
                         f"allow_outside_images=True or set {ALLOW_OUTSIDE_ENV}=1 if you trust it)")
    return path


def _decode(value: Any, folder: Path, allow_outside: bool) -> Image.Image:
    """An RGB image from what an undecoded image column holds: {'bytes', 'path'}, a path, or a PIL image."""
    if isinstance(value, Image.Image):
        return to_mode(value, "RGB")
    if isinstance(value, dict) and value.get("bytes"):
        return _decode_bytes(value["bytes"])
    if isinstance(value, dict) and value.get("path"):
        value = value["path"]
    if isinstance(value, str):
        return load_image(_image_path(value, folder, allow_outside))  # a regular file, bounded in pixels
    raise ImageError(f"not an image: {type(value).__name__}")


class HFImages(LabelledImages):
    """``LabelledImages`` over rows of a ``datasets.Dataset``: ``items`` are row numbers, images are read
    and decoded by ``load`` only (the Arrow data stays memory-mapped)."""

    def __init__(self, dataset: Any, image_column: str, rows: list[int], labels: list[Any], *, folder: Path,
                 allow_outside: bool) -> None:
        super().__init__(list(rows), labels)
        ds = _datasets()
        # reading a row decodes no other column, and the image column is decoded by vitkit, not by datasets
        try:
            self.dataset = dataset.select_columns([image_column]).cast_column(image_column, ds.Image(decode=False))
        except Exception as exc:  # noqa: BLE001 - whatever pyarrow raises on a column it cannot cast
            raise DataError(f"The image column {image_column!r} cannot be read as images ({type(exc).__name__}: "
                            f"{_one_line(exc)}). Name the image column with {IMAGE_COLUMN}.",
                            hints=(IMAGE_COLUMN,)) from None
        self.image_column, self.folder, self.allow_outside = image_column, folder, allow_outside

    def load(self, index: int) -> Image.Image | None:
        row = int(self.items[index])  # type: ignore[arg-type]
        try:
            return _decode(self.dataset[row][self.image_column], self.folder, self.allow_outside)
        except Exception as exc:  # noqa: BLE001 - any decoding failure is a skipped image, as for files
            logger.warning("skipping an unreadable image (row %d of %s): %s", row, self.image_column, _one_line(exc))
            return None

    def subset(self, indices: Sequence[int]) -> HFImages:
        out = type(self).__new__(type(self))  # keeps MultiLabelHFImages multi-label
        LabelledImages.__init__(out, [self.items[i] for i in indices], self.labels_at(indices))
        out.dataset, out.image_column = self.dataset, self.image_column
        out.folder, out.allow_outside = self.folder, self.allow_outside
        return out


class MultiLabelHFImages(HFImages, MultiLabelImages):
    """``HFImages`` with multi-label targets (``MultiHotTargets``: sparse, read as multi-hot (K,) tensors)."""


@dataclass
class HFSource:
    """One split of a saved dataset: its images and labels, the class names, and the columns used."""

    images: HFImages
    classes: list[str]
    multi_label: bool
    source: str
    image_column: str
    label_column: str
    skipped: list[str] = field(default_factory=list)  # rows without a label

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "images": len(self.images), "classes": len(self.classes),
                "kind": "multi-label" if self.multi_label else "single-label", "image_column": self.image_column,
                "label_column": self.label_column, "skipped": len(self.skipped)}


def _column(features: dict[str, Any], name: str | None, kind: str, fits: Any, where: str) -> str:
    """The named column (checked), or the one column that ``fits``, or a clear error listing the columns."""
    if name is not None:
        if name not in features:
            raise DataError(f"{where} has no column {name!r}; its columns: {', '.join(features)}. "
                            f"Pass --{kind}-column with one of them.")
        return name
    found = [c for c, f in features.items() if fits(c, f)]
    if len(found) != 1:
        what = "none" if not found else f"several ({', '.join(found)})"
        raise DataError(f"{where}: cannot tell its {kind} column ({what} found among {', '.join(features)}). "
                        f"Name it with {kind}_column= (--{kind}-column).")
    return found[0]


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, cut at ``limit`` characters (a stranger's data may be in it)."""
    return " ".join(str(exc).split())[:limit]


def _check_image_feature(feature: Any, column: str, where: str, ds: Any) -> None:
    """Refuse an image column whose type holds no image: an Image feature, paths as text, or {bytes, path}."""
    text = isinstance(feature, ds.Value) and feature.dtype in ("string", "large_string")
    struct = isinstance(feature, dict) and {"bytes", "path"} >= set(feature) and bool(feature)
    if not (isinstance(feature, ds.Image) or text or struct):
        raise DataError(f"{where}: the image column {column!r} holds {str(feature)[:100]}, not images (expected an "
                        f"Image feature, paths as text, or {{bytes, path}}). Name the image column with "
                        f"{IMAGE_COLUMN}.", hints=(IMAGE_COLUMN,))


def _class_label(feature: Any, ds: Any) -> tuple[Any, bool]:
    """(the ClassLabel feature or None, multi-label?) of a label column's feature type."""
    inner = getattr(feature, "feature", None)  # Sequence(...) / List(...)
    if inner is not None:
        return (inner if isinstance(inner, ds.ClassLabel) else None), True
    return (feature if isinstance(feature, ds.ClassLabel) else None), False


def _encode(values: list[Any], multi: bool, classes: Sequence[str] | None, where: str) -> tuple[list[str], list[Any]]:
    """(class names, values as class indices) of a label column that is not a ClassLabel: the names are
    ``classes`` when given (another split's), else the sorted values found."""
    seen = {str(v) for value in values if value is not None for v in (value if multi else [value])}
    check_class_count(len(seen), where)
    names = list(classes) if classes is not None else sort_class_names(seen)
    unknown = sorted(seen - set(names))
    if unknown:
        raise DataError(f"{where}: label {unknown[0]!r} is not one of the classes ({', '.join(names[:8])}). "
                        f"Give every split the same label values.")
    index = {n: i for i, n in enumerate(names)}
    return names, [None if v is None else ([index[str(x)] for x in v] if multi else index[str(v)]) for v in values]


def _targets(values: list[Any], multi: bool, names: list[str], where: str) -> tuple[list[int], Any]:
    """(kept row numbers, labels: ints, or ``MultiHotTargets``) from class indices per row."""
    if multi:  # -1 is ClassLabel's "no label", inside a list as well
        values = [None if v is None else [x for x in v if x != -1] for v in values]
    rows = [i for i, v in enumerate(values) if v is not None and (multi or v >= 0)]
    if not rows:
        column = keyword("label_column")
        raise DataError(f"{where}: no row has a label. Name the label column with {column}.", hints=(column,))
    bad = next(((i, x) for i in rows for x in (values[i] if multi else [values[i]])
                if not isinstance(x, int) or not 0 <= x < len(names)), None)
    if bad is not None:
        raise DataError(f"{where}: row {bad[0]} has the label {bad[1]!r}, but the label column names "
                        f"{len(names)} classes (0..{len(names) - 1}). Fix the ClassLabel names or the data.")
    if not multi:
        return rows, [int(values[i]) for i in rows]
    return rows, MultiHotTargets((values[i] for i in rows), len(names))


def _source(dataset: Any, where: str, image_column: str | None, label_column: str | None,
            classes: Sequence[str] | None, folder: Path, allow_outside: bool) -> HFSource:
    ds = _datasets()
    features = dict(dataset.features)
    image_col = _column(features, image_column, "image", lambda c, f: isinstance(f, ds.Image), where)
    _check_image_feature(features[image_col], image_col, where, ds)
    label_col = _column(features, label_column, "label",
                        lambda c, f: _class_label(f, ds)[0] is not None or c in LABEL_NAMES, where)
    class_label, multi = _class_label(features[label_col], ds)
    values = list(dataset[label_col])  # reads the label column only
    if class_label is not None:
        check_class_count(len(class_label.names), f"{where}'s ClassLabel")
        names = list(class_label.names)
    else:
        names, values = _encode(values, multi, classes, where)
    rows, labels = _targets(values, multi, names, where)
    skipped = [f"row {i}: no label" for i in sorted(set(range(len(dataset))) - set(rows))]
    cls = MultiLabelHFImages if multi else HFImages
    images = cls(dataset, image_col, rows, labels, folder=folder, allow_outside=allow_outside)
    return HFSource(images, names, multi, where, image_col, label_col, skipped)


def _load(path: str | os.PathLike) -> Any:
    ds = _datasets()
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DataError(f"Hugging Face dataset folder {str(folder)!r} does not exist. Give the folder that "
                        f"datasets' save_to_disk wrote.")
    _check_folder(folder)
    try:
        return ds.load_from_disk(str(folder))
    except Exception as exc:  # noqa: BLE001 - whatever datasets or pyarrow raise on a damaged folder
        raise DataError(f"{str(folder)!r} is not a dataset saved with save_to_disk ({type(exc).__name__}: "
                        f"{_one_line(exc)}).") from None


def _json(path: Path) -> Any:
    data = read_regular_bytes(path, what="dataset file", max_bytes=MAX_JSON_BYTES, error=DataError)
    return parse_json(data, f"Dataset file {str(path)!r}", error=DataError, fix="Save the dataset again.")


def _inside(folder: Path, name: Any, what: str) -> Path:
    """``folder / name`` for a file a dataset's JSON names, refused unless it stays inside ``folder``."""
    if not isinstance(name, str) or not name or "\x00" in name or os.path.isabs(name) or \
            os.path.normpath(name).split(os.sep)[0] == "..":
        raise DataError(f"{what} names {str(name)[:200]!r}, expected a file inside {str(folder)!r}; vitkit only "
                        "reads files inside a dataset folder. Save the dataset again.")
    path = folder / name
    if not os.path.realpath(path).startswith(os.path.realpath(folder) + os.sep):
        raise DataError(f"{what} names {name!r}, a link leading outside {str(folder)!r}. Save the dataset again.")
    return path


def _check_split(folder: Path) -> None:
    """A Dataset folder: state.json naming Arrow files inside it (regular files), JSON files sound."""
    state = _json(folder / "state.json")
    files = state.get("_data_files") if isinstance(state, dict) else None
    where = f"{str(folder / 'state.json')!r}"
    if not isinstance(files, list) or not files or not all(isinstance(f, dict) for f in files):
        raise DataError(f"{where} has _data_files={str(files)[:80]!r}, expected a non-empty list of "
                        "{\"filename\": ...} entries. Save the dataset again.")
    for entry in files:
        path = _inside(folder, entry.get("filename"), where)
        if not path.is_file():
            raise DataError(f"{where} names the data file {path.name!r}, which is missing or not a regular file. "
                            "Save the dataset again.")
    if (folder / "dataset_info.json").exists() and not isinstance(_json(folder / "dataset_info.json"), dict):
        raise DataError(f"{str(folder / 'dataset_info.json')!r} is not a JSON object. Save the dataset again.")


def _check_folder(folder: Path) -> None:
    """Check what ``datasets.load_from_disk`` would follow, before it reads anything."""
    if (folder / "dataset_dict.json").exists():
        splits = _json(folder / "dataset_dict.json")
        names = splits.get("splits") if isinstance(splits, dict) else None
        if not isinstance(names, list) or not names:
            raise DataError(f"{str(folder / 'dataset_dict.json')!r} has splits={str(names)[:80]!r}, expected a "
                            "list of split names. Save the dataset again.")
        for name in names:
            _check_split(_inside(folder, name, str(folder / "dataset_dict.json")))
    elif (folder / "state.json").exists():
        _check_split(folder)


def read_hf_dataset(path: str | os.PathLike, *, split: str | None = None, image_column: str | None = None,
                    label_column: str | None = None, classes: Sequence[str] | None = None,
                    allow_outside_images: bool | None = None) -> HFSource:
    """One split of a saved dataset (``split``: a DatasetDict's split, default 'train'; ignored for a Dataset).
    ``classes`` orders plain (non-ClassLabel) label values; ClassLabel names are used as they are.
    ``allow_outside_images``: read image paths outside the folder (default: ``VITKIT_HF_ALLOW_OUTSIDE_IMAGES``)."""
    data = _load(path)
    folder = Path(path).expanduser()
    allow = os.environ.get(ALLOW_OUTSIDE_ENV) == "1" if allow_outside_images is None else allow_outside_images
    where = os.fspath(path)
    if hasattr(data, "keys"):  # a DatasetDict
        split = split or TRAIN_SPLIT
        if split not in data:
            raise DataError(f"{where} has no split {split!r}; its splits: {', '.join(data)}. Choose one.")
        data, where, folder = data[split], f"{where}[{split}]", folder / split
    return _source(data, where, image_column, label_column, classes, folder, allow)


def load_hf_splits(path: str | os.PathLike, *, split: str | None = None, val_split: str | None = None,
                   image_column: str | None = None, label_column: str | None = None, val_fraction: float = 0.2,
                   seed: int = 0, allow_outside_images: bool | None = None) -> DataSplits:
    """Training and validation splits of a saved dataset: the DatasetDict's validation split when it has one
    (or ``val_split``), else a seeded ``val_fraction`` of the training rows (stratified when single-label)."""
    data = _load(path)
    if val_split is None and hasattr(data, "keys"):
        val_split = next((n for n in VAL_DIR_NAMES if n in data), None)
    train = read_hf_dataset(path, split=split, image_column=image_column, label_column=label_column,
                            allow_outside_images=allow_outside_images)
    logger.info("hf dataset: %s", train.describe())
    if val_split is not None:
        val = read_hf_dataset(path, split=val_split, image_column=train.image_column, label_column=train.label_column,
                              classes=train.classes, allow_outside_images=allow_outside_images)
        if val.classes != train.classes:
            raise DataError(f"{val.source} has classes {val.classes[:5]}... but {train.source} has "
                            f"{train.classes[:5]}...; give both splits the same ClassLabel names.")
        return DataSplits(train.images, val.images, train.classes, train.source, train.skipped + val.skipped,
                          info={**_info(train), "val_source": val.source})
    groups = [0] * len(train.images) if train.multi_label else train.images.labels
    train_idx, val_idx = stratified_split(groups, val_fraction, seed)
    return DataSplits(train.images.subset(train_idx), train.images.subset(val_idx), train.classes, train.source,
                      train.skipped, info=_info(train))


def _info(src: HFSource) -> dict[str, Any]:
    """What ``DataSplits.describe`` adds for a saved dataset: the kind and the columns used."""
    d = src.describe()
    return {k: d[k] for k in ("kind", "image_column", "label_column")}
