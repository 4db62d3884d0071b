"""Labelled images listed in a label file (CSV or JSONL), single-label or multi-label.

CSV: a header with ``path`` and either ``label`` (one class per image) or ``labels`` (any number,
separated by ``;`` or ``|``, possibly none). JSONL: one object per line, ``{"path": ..., "label": ...}``
or ``{"path": ..., "labels": [...]}``. Relative paths are resolved against the label file's folder
(absolute paths are kept, so images may live anywhere). Files that do not exist, are not regular files
(a FIFO, a device) or whose path cannot be used (too long) are skipped and counted; unreadable images are
skipped later, when loaded, as for image folders. An image listed twice with the same labels is kept
once (with a warning); listed with different labels, the file is refused, naming both lines. The file is
read bounded: at most ``MAX_LABEL_FILE_BYTES``, fields of at most ``MAX_FIELD_CHARS``.

Single-label files give ``LabelledImages`` (integer labels), exactly as ``datasets.load_folder``
does; multi-label files give ``MultiLabelImages``, whose labels (``MultiHotTargets``) are held sparse, as the
class indices of each image, and read as multi-hot float tensors (K,), which ``collate_multilabel`` stacks to
(B, K): a dense target exists only for the images of a batch. The class list is sorted (numerically when
every name is an integer) unless given, and holds at most ``datasets.LIMITS.max_classes`` names.

``vitkit train`` reads one with ``--labels FILE`` (instead of a folder; ``--val-labels FILE`` for a
separate validation list, else ``--val-fraction`` splits it) and ``--multi-label`` (forces multi-label for
a ``label`` column); a fixed class order is the library's ``classes=`` argument. The loop calls
``load_label_splits(...)`` -> ``DataSplits`` and, when ``is_multi_label(splits)``, uses
``collate_multilabel`` and a multi-label loss from ``vitkit.multilabel``.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import DataError
from ..fileio import parse_json, read_regular_bytes
from .datasets import DataSplits, LabelledImages, check_class_count, collate_skipping, stratified_split

logger = logging.getLogger(__name__)

LABEL_SEPARATORS = re.compile(r"[;|]")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
Row = tuple[int, str, list[str]]  # (line number, path as written, class names)
MAX_LABEL_FILE_BYTES = 1 << 30  # ~10 million rows
MAX_FIELD_CHARS = 131_072  # csv's own field limit: a longer field is no path or label list


class MultiHotTargets(Sequence[torch.Tensor]):
    """Multi-label targets held sparse: the class indices of each image (one flat index list and each
    image's offset into it), so n images of K classes cost their labels, not n * K floats. Item ``i`` is
    image i's multi-hot float tensor (K,), built when it is read (a batch's worth at a time)."""

    def __init__(self, rows: Iterable[Iterable[int]], num_classes: int) -> None:
        flat: list[int] = []
        offsets = [0]
        for row in rows:
            flat += sorted({int(i) for i in row})
            offsets.append(len(flat))
        if flat and not 0 <= min(flat) <= max(flat) < num_classes:
            raise ValueError(f"class indices must lie in 0..{num_classes - 1}")
        self.num_classes = num_classes
        self.indices = torch.tensor(flat, dtype=torch.int64)  # (labels,)
        self.offsets = torch.tensor(offsets, dtype=torch.int64)  # (images + 1,)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def classes_of(self, index: int) -> list[int]:
        """The class indices of image ``index``, ascending."""
        i = range(len(self))[index]  # negative indices count from the end; out of range: IndexError
        return self.indices[self.offsets[i]:self.offsets[i + 1]].tolist()

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        target = torch.zeros(self.num_classes)
        target[self.classes_of(index)] = 1.0
        return target

    def take(self, indices: Sequence[int]) -> MultiHotTargets:
        """The targets of ``indices``, in that order (still sparse)."""
        return MultiHotTargets((self.classes_of(i) for i in indices), self.num_classes)

    def positives(self) -> int:
        """Labels over all images (the multi-hot ones)."""
        return len(self.indices)


@dataclass
class MultiLabelImages(LabelledImages):
    """Images with multi-label targets (``MultiHotTargets``: sparse, read as multi-hot (K,) float tensors)."""

    labels: MultiHotTargets  # type: ignore[assignment]

    def subset(self, indices: Sequence[int]) -> MultiLabelImages:
        return MultiLabelImages([self.items[i] for i in indices], self.labels_at(indices))

    def labels_at(self, indices: Sequence[int]) -> MultiHotTargets:
        return self.labels.take(indices)


def is_multi_label(splits: DataSplits) -> bool:
    """Whether a data source's targets are multi-hot (use a multi-label loss and ``collate_multilabel``)."""
    return isinstance(splits.train, MultiLabelImages)


def collate_multilabel(batch: list[tuple[torch.Tensor, torch.Tensor, int] | None],
                       ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``collate_skipping`` for multi-hot targets: (images (B, C, H, W), targets (B, K) float, unreadable count).
    (``collate_skipping`` stacks tensor targets itself; this only makes the float dtype explicit.)"""
    images, targets, skipped = collate_skipping(batch)
    return images, targets.float(), skipped


@dataclass
class LabelFile:
    """What a label file held: the images found, the classes, and what was skipped (with why)."""

    images: LabelledImages
    classes: list[str]
    multi_label: bool
    source: str
    skipped: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        labels = self.images.labels
        per_image = labels.positives() / len(labels) if self.multi_label and len(labels) else 1.0
        return {"source": self.source, "images": len(self.images), "classes": len(self.classes),
                "kind": "multi-label" if self.multi_label else "single-label",
                "labels_per_image": round(per_image, 3), "skipped": len(self.skipped)}


def _fail(path: Path, line: int | None, what: str, fix: str) -> DataError:
    where = f"{str(path)!r}" + (f", line {line}" if line is not None else "")
    return DataError(f"Label file {where}: {what}. {fix}")


def _names(value: Any, multi: bool, path: Path, line: int) -> list[str]:
    """Class names of one entry: a string (split on ; or |, so a single label holding one is refused as
    ambiguous), a number, or a JSON list."""
    if isinstance(value, list):
        if not multi:
            raise _fail(path, line, "'label' holds a list", "Use the key 'labels' for several classes per image")
        items = value
    elif isinstance(value, (str, int)) and not isinstance(value, bool):
        items = LABEL_SEPARATORS.split(value) if isinstance(value, str) else [value]
    else:
        raise _fail(path, line, f"the label {value!r} is not a class name", "Give names as text (or integers)")
    names = [str(v).strip() for v in items if str(v).strip()]
    if not multi and len(names) != 1:
        raise _fail(path, line, f"expected exactly one label, found {value!r}",
                    "Give one class name per image (or a 'labels' column for multi-label data)")
    return names


def _csv_rows(path: Path, text: str) -> tuple[bool, list[Row]]:
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    label_cols = [c for c in ("label", "labels") if c in header]
    if "path" not in header or len(label_cols) != 1:
        raise _fail(path, 1, f"the header is {','.join(header) or '(empty)'}",
                    "Start the CSV with the header 'path,label' (one class per image) or 'path,labels' (classes "
                    "separated by ';' or '|')")
    col = label_cols[0]
    multi = col == "labels"
    rows = []
    for line, row in _csv_records(reader, path):
        if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
            continue  # a blank line
        image = (row.get("path") or "").strip()
        if not image:
            raise _fail(path, line, "the path is empty", "Give every row an image path")
        rows.append((line, image, _names(row.get(col) or "", multi, path, line)))
    return multi, rows


def _csv_records(reader: csv.DictReader, path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) of each record; a field beyond the limit is refused naming its line."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _fail(path, reader.line_num + 1, f"cannot be parsed as CSV ({exc}; fields may hold at most "
                        f"{MAX_FIELD_CHARS:,} characters)", "Fix the line (is a quote left open?)") from None
        yield reader.line_num, row


def _jsonl_rows(path: Path, text: str) -> tuple[bool | None, list[Row]]:
    kinds: set[bool] = set()
    rows = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        if len(raw) > MAX_FIELD_CHARS:
            raise _fail(path, line, f"the line has {len(raw):,} characters, more than {MAX_FIELD_CHARS:,}",
                        "Write one short JSON object per line")
        obj = parse_json(raw, f"Label file {str(path)!r}, line {line}", error=DataError,
                         fix="Write one JSON object per line")
        keys = [k for k in ("label", "labels") if isinstance(obj, dict) and k in obj]
        if not isinstance(obj, dict) or not isinstance(obj.get("path"), str) or len(keys) != 1:
            raise _fail(path, line, f"expected {{\"path\": ..., \"label\": ...}} or {{\"path\": ..., \"labels\": "
                        f"[...]}}, found {raw.strip()[:80]}", "Fix or remove the line")
        multi = keys[0] == "labels"
        kinds.add(multi)
        rows.append((line, obj["path"], _names(obj[keys[0]], multi, path, line)))
    if len(kinds) > 1:
        raise _fail(path, None, "some lines use 'label' and others 'labels'", "Use one key throughout the file")
    return (kinds.pop() if kinds else None), rows


def _read_rows(path: Path) -> tuple[bool | None, list[Row]]:
    if not os.path.lexists(path):
        raise _fail(path, None, "no such file", "Check the path")
    data = read_regular_bytes(path, what="label file", max_bytes=MAX_LABEL_FILE_BYTES, error=DataError)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _fail(path, None, f"cannot be read ({exc})", "Give a UTF-8 CSV or JSONL file") from None
    jsonl = path.suffix.lower() in JSONL_SUFFIXES or (path.suffix.lower() != ".csv" and text.lstrip().startswith("{"))
    return _jsonl_rows(path, text) if jsonl else _csv_rows(path, text)


def sort_class_names(names: set[str]) -> list[str]:
    """Sorted names; numerically when all are integers (so '10' follows '9')."""
    if names and all(re.fullmatch(r"-?\d+", n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def _resolve(rows: list[Row], folder: Path) -> Iterator[tuple[Row, Path]]:
    for row in rows:
        p = Path(row[1]).expanduser()
        yield row, (p if p.is_absolute() else folder / p)


def _why_unusable(image: Path) -> str | None:
    """Why an image path is skipped (the checks folder images get), or None: it is a regular file."""
    try:
        mode = os.stat(image).st_mode
    except FileNotFoundError:
        return "no such file"
    except (OSError, ValueError) as exc:  # a name too long or holding NUL, a component that is a file
        return f"cannot be used ({getattr(exc, 'strerror', None) or exc})"
    return None if stat.S_ISREG(mode) else "not a regular file (a folder, FIFO, device or socket)"


def _found_images(file: Path, rows: list[Row]) -> tuple[list[tuple[Row, Path]], list[str]]:
    """The rows whose image can be read, each image once, and the skipped ones with why. The same image with
    other labels is refused naming both lines: it could otherwise land in both training and validation."""
    found: dict[str, tuple[Row, Path]] = {}
    skipped: list[str] = []
    copies = 0
    for row, image in _resolve(rows, file.parent):
        why = _why_unusable(image)
        if why is not None:
            skipped.append(f"{str(image)[:300]} (line {row[0]}): {why}")
            continue
        key = os.path.normpath(os.path.abspath(image))
        if key in found:
            first = found[key][0]
            if sorted(first[2]) != sorted(row[2]):
                raise _fail(file, row[0], f"{row[1]!r} is listed again with labels {row[2]} (line {first[0]} gives "
                            f"{first[2]})", "Keep one line per image, with all its labels")
            copies += 1
            continue
        found[key] = (row, image)
    if copies:
        logger.warning("%s: %d image(s) listed more than once with the same labels; each is used once", file, copies)
    return list(found.values()), skipped


def read_label_file(path: str | os.PathLike, *, classes: Sequence[str] | None = None,
                    multi_label: bool | None = None) -> LabelFile:
    """The images a label file lists, with their labels.

    ``classes`` fixes the class order (a label outside it is an error); by default the sorted names
    found. ``multi_label``: None decides from the file (``labels`` -> multi-label); True reads a
    ``label`` column as one-element label sets; False refuses entries with other than one label.
    """
    file = Path(path).expanduser()
    multi, rows = _read_rows(file)
    multi = bool(multi) if multi_label is None else multi_label
    if multi_label is False and any(len(names) != 1 for _, _, names in rows):
        bad = next(line for line, _, names in rows if len(names) != 1)
        raise _fail(file, bad, "expected exactly one label (multi_label=False)", "Give one class per image")
    found, skipped = _found_images(file, rows)
    if skipped:
        logger.warning("%s: skipped %d image files that are missing or unusable (first: %s)", file, len(skipped),
                       skipped[0])
    if not found:
        raise _fail(file, None, f"none of its {len(rows)} images exist (first missing: "
                    f"{skipped[0] if skipped else 'the file lists none'})",
                    "Paths are relative to the label file's folder; check them")
    names = list(classes) if classes is not None else sort_class_names({n for (_, _, ns), _ in found for n in ns})
    check_class_count(len(names), f"Label file {str(file)!r}" if classes is None else "The class list")
    index = {n: i for i, n in enumerate(names)}
    for (line, _, ns), _ in found:
        unknown = [n for n in ns if n not in index]
        if unknown:
            raise _fail(file, line, f"label {unknown[0]!r} is not one of the classes ({', '.join(names[:8])}"
                        f"{', ...' if len(names) > 8 else ''})", "Fix the label or the class list")
    items = [image for _, image in found]
    if multi:
        targets = MultiHotTargets(([index[n] for n in ns] for (_, _, ns), _ in found), len(names))
        images: LabelledImages = MultiLabelImages(items, targets)
    else:
        images = LabelledImages(items, [index[ns[0]] for (_, _, ns), _ in found])
    return LabelFile(images, names, multi, os.fspath(file), skipped)


def load_label_splits(train: str | os.PathLike, val: str | os.PathLike | None = None, *, val_fraction: float = 0.2,
                      seed: int = 0, classes: Sequence[str] | None = None,
                      multi_label: bool | None = None) -> DataSplits:
    """Training and validation splits from label files: ``val`` when given (same classes as ``train``),
    else a seeded ``val_fraction`` of ``train`` (stratified by class for single-label data)."""
    data = read_label_file(train, classes=classes, multi_label=multi_label)
    logger.info("label file: %s", data.describe())
    if val is not None:
        held = read_label_file(val, classes=data.classes, multi_label=data.multi_label)
        _warn_overlap(data, held)
        return DataSplits(data.images, held.images, data.classes, data.source, data.skipped + held.skipped,
                          info=_info(data, held))
    # multi-label sets have no single class to stratify by: one group, a seeded random fraction
    groups = [0] * len(data.images) if data.multi_label else data.images.labels
    train_idx, val_idx = stratified_split(groups, val_fraction, seed)
    return DataSplits(data.images.subset(train_idx), data.images.subset(val_idx), data.classes, data.source,
                      data.skipped, info=_info(data))


def _warn_overlap(train: LabelFile, val: LabelFile) -> None:
    """An image in both the training and the validation file is validated on what it learnt: said, not refused
    (the two files are the user's choice)."""
    seen = {os.path.normpath(os.path.abspath(p)) for p in train.images.items}
    both = [p for p in val.images.items if os.path.normpath(os.path.abspath(p)) in seen]
    if both:
        logger.warning("%d image(s) are in both %s and %s (first: %s); validation scores will be optimistic",
                       len(both), train.source, val.source, both[0])


def _info(data: LabelFile, val: LabelFile | None = None) -> dict[str, Any]:
    """What ``DataSplits.describe`` adds for label files: the kind, labels per image, the validation file."""
    d = data.describe()
    out = {"kind": d["kind"], "labels_per_image": d["labels_per_image"]}
    return {**out, "val_source": val.source} if val is not None else out
