"""Labelled images for training and evaluation: an image folder, or the bundled digits.

A folder is either split already (``train/<class>/...`` and ``val/<class>/...``) or one set of class
folders that a seeded, class-stratified fraction splits. With no folder, the 1,797 scikit-learn digits
are used, held in memory. Unreadable files are skipped and counted, never fatal.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from ..checks import limits_from_env
from ..errors import DataError, ImageError
from .digits import DIGITS_CLASSES, load_digits_images
from .images import is_image_file, load_image

logger = logging.getLogger(__name__)

VAL_DIR_NAMES = ("val", "valid", "validation")
DIGITS_SOURCE = "digits"
DATA_LIMITS_ENV = "VITKIT_DATA_LIMITS"


@dataclass
class DataLimits:
    """Upper bounds on a data source, checked before its labels are turned into targets. A run's cost grows
    with the class count (the head, every batch's multi-hot targets, the validation scores), so a few hundred
    kilobytes of label file naming a new class per line must not become a model with a million outputs.
    ImageNet-21k (21,843 classes) and Open Images (about 20,000) fit. To go further, raise the bound:
    ``vitkit.data.datasets.LIMITS.max_classes = 500_000``, or ``VITKIT_DATA_LIMITS="max_classes=500000"``."""

    max_classes: int = 100_000


LIMITS = limits_from_env(DataLimits(), DATA_LIMITS_ENV)


def check_class_count(count: int, where: str) -> None:
    """Refuse a data source with more classes than ``LIMITS.max_classes`` (``where`` names it)."""
    if count > LIMITS.max_classes:
        raise DataError(f"{where} has {count:,} classes, more than the limit of {LIMITS.max_classes:,}. Check the "
                        f"labels (is a path or an id in the label column?); to train on more classes, raise the "
                        f"limit with {DATA_LIMITS_ENV}=max_classes=N.")


@dataclass
class LabelledImages:
    """Images (in memory, or files read on demand) with integer labels."""

    items: list[Image.Image | Path]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> Image.Image | None:
        """The image at ``index`` (RGB), or None (logged) when its file cannot be read."""
        item = self.items[index]
        if isinstance(item, Image.Image):
            return item  # in memory: the bundled digits, already RGB
        try:
            return load_image(item)
        except ImageError as exc:
            logger.warning("skipping an unreadable image: %s", exc)
            return None

    def subset(self, indices: Sequence[int]) -> LabelledImages:
        return LabelledImages([self.items[i] for i in indices], self.labels_at(indices))

    def labels_at(self, indices: Sequence[int]) -> Any:
        """The labels of ``indices``, held as this kind of images holds them."""
        return [self.labels[i] for i in indices]


@dataclass
class DataSplits:
    """The training and validation images of one data source, their class names, and what was skipped."""

    train: LabelledImages
    val: LabelledImages
    classes: list[str]
    source: str
    skipped: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # what the source adds (kind, columns, labels per image)

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "classes": len(self.classes), "train_images": len(self.train),
                "val_images": len(self.val), "skipped_files": len(self.skipped), **self.info}


def find_classes(folder: Path) -> list[str]:
    """The class names of ``folder``: its visible subfolders, sorted."""
    if not folder.is_dir():
        raise DataError(f"Data folder {str(folder)!r} does not exist or is not a folder. Expected "
                        f"<folder>/<class>/<image> (or train/ and val/ inside); check the path.")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"Data folder {str(folder)!r} has no class subfolders. Put each class's images in "
                        f"{folder}/<class_name>/ (at least one image per class).")
    check_class_count(len(classes), f"Data folder {str(folder)!r}")
    return classes


def _readable(path: Path) -> bool:
    """A cheap header check: Pillow can identify the file (full decoding happens when it is used)."""
    try:
        with Image.open(path) as img:
            img.size  # noqa: B018 - identification is the check
        return True
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False


def scan_folder(folder: Path, classes: Sequence[str]) -> tuple[list[Path], list[int], list[str]]:
    """(paths, labels, skipped files) of ``folder/<class>/**`` for the given class order."""
    paths: list[Path] = []
    labels: list[int] = []
    skipped: list[str] = []
    for label, name in enumerate(classes):
        class_dir = folder / name
        files = sorted(p for p in class_dir.rglob("*") if p.is_file() and not p.name.startswith(".")) \
            if class_dir.is_dir() else []
        good = [p for p in files if is_image_file(p) and _readable(p)]
        kept = set(good)
        skipped += [os.fspath(p) for p in files if p not in kept]
        if not good:
            raise DataError(f"Class folder {str(class_dir)!r} holds no readable image. Add images to it "
                            f"or remove the folder (every class needs at least one image).")
        paths += good
        labels += [label] * len(good)
    if skipped:
        logger.warning("skipped %d unreadable or non-image files in %s (first: %s)", len(skipped), folder,
                       skipped[0])
    return paths, labels, skipped


def stratified_split(labels: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, val) indices: a seeded ``fraction`` of each class held out (at least one when it has two)."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"Validation fraction {fraction} is not allowed: expected a value between 0 and 1 "
                        f"(e.g. 0.2), or a folder with train/ and val/ inside.")
    gen = torch.Generator().manual_seed(seed)
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    train: list[int] = []
    val: list[int] = []
    for label in sorted(by_class):
        idx = by_class[label]
        order = [idx[j] for j in torch.randperm(len(idx), generator=gen).tolist()]
        n_val = min(max(round(len(idx) * fraction), 1), len(idx) - 1) if len(idx) > 1 else 0
        val += order[:n_val]
        train += order[n_val:]
    return sorted(train), sorted(val)


def _val_dir(folder: Path) -> Path | None:
    return next((folder / n for n in VAL_DIR_NAMES if (folder / n).is_dir()), None)


def load_folder(folder: str | os.PathLike, *, val_fraction: float = 0.2, seed: int = 0) -> DataSplits:
    """The splits of an image folder: ``train/`` + ``val/`` if present, else a seeded stratified split."""
    root = Path(folder).expanduser()
    val_dir = _val_dir(root)
    train_dir = root / "train" if (root / "train").is_dir() else root
    classes = find_classes(train_dir)
    if val_dir is not None and train_dir != root:
        extra = sorted(set(find_classes(val_dir)) - set(classes))
        if extra:
            raise DataError(f"Validation folder {str(val_dir)!r} has classes that train/ lacks: {', '.join(extra)}. "
                            f"Give both the same class folders.")
        paths, labels, skipped = scan_folder(train_dir, classes)
        present = [c for c in classes if (val_dir / c).is_dir()]
        vpaths, vlabels, vskipped = scan_folder(val_dir, present)
        vlabels = [classes.index(present[i]) for i in vlabels]
        return DataSplits(LabelledImages(list(paths), labels), LabelledImages(list(vpaths), vlabels),
                          classes, os.fspath(root), skipped + vskipped)
    paths, labels, skipped = scan_folder(train_dir, classes)
    everything = LabelledImages(list(paths), labels)
    train_idx, val_idx = stratified_split(labels, val_fraction, seed)
    return DataSplits(everything.subset(train_idx), everything.subset(val_idx), classes, os.fspath(root), skipped)


def folder_classes(folder: str | os.PathLike) -> list[str]:
    """The class names an image folder gives (its train/ subfolders when it has train/ inside), read from
    its top level only: cheap to check against a model before any image is looked at."""
    root = Path(folder).expanduser()
    return find_classes(root / "train" if (root / "train").is_dir() else root)


def load_whole_folder(folder: str | os.PathLike) -> DataSplits:
    """Every image of a folder as the split to score (no training split): its ``val/`` when it has
    ``train/`` and ``val/`` inside, else all its class folders."""
    root = Path(folder).expanduser()
    if _val_dir(root) is not None and (root / "train").is_dir():
        splits = load_folder(root)
        return DataSplits(LabelledImages([], []), splits.val, splits.classes, splits.source, splits.skipped)
    classes = find_classes(root)
    paths, labels, skipped = scan_folder(root, classes)
    return DataSplits(LabelledImages([], []), LabelledImages(list(paths), labels), classes, os.fspath(root), skipped)


def load_digits(*, size: int = 32, val_fraction: float = 0.2, seed: int = 0) -> DataSplits:
    """The bundled digits (1,797 images of ``size`` x ``size``), with a seeded stratified held-out split."""
    images, labels = load_digits_images(size)
    everything = LabelledImages(list(images), labels)
    train_idx, val_idx = stratified_split(labels, val_fraction, seed)
    return DataSplits(everything.subset(train_idx), everything.subset(val_idx), list(DIGITS_CLASSES),
                      DIGITS_SOURCE)


def load_splits(data: str | os.PathLike | None, *, val_fraction: float = 0.2, seed: int = 0) -> DataSplits:
    """An image folder's splits, or the bundled digits when ``data`` is None or 'digits'."""
    if data is None or os.fspath(data) == DIGITS_SOURCE:
        return load_digits(val_fraction=val_fraction, seed=seed)
    return load_folder(data, val_fraction=val_fraction, seed=seed)


Transform = Callable[[Image.Image, int, int], torch.Tensor]


class TransformedImages(torch.utils.data.Dataset):
    """A map-style dataset over ``LabelledImages``: ``dataset[(epoch, index)] -> (tensor, label, skipped)``.

    The key carries the epoch so ``transform(img, epoch, index)`` can seed its randomness per image
    and epoch, independently of workers and processes. An unreadable image yields None, which
    ``collate_skipping`` drops and counts. With ``replace_unreadable`` (training) the next readable
    image stands in instead and the sample carries a skip count of 1: a training sample is never
    missing, so every batch has its full size and every DDP rank steps (a step holds collectives, so
    one rank skipping it would hang the others).
    """

    def __init__(self, images: LabelledImages, transform: Transform, *, replace_unreadable: bool = False) -> None:
        self.images = images
        self.transform = transform
        self.replace_unreadable = replace_unreadable

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int] | int) -> tuple[torch.Tensor, int, int] | None:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        # training: look at every image before giving up (the folder scan already dropped files whose
        # header fails, so a long run of images that fail to decode is rare and costs only then)
        tries = len(self.images) if self.replace_unreadable else 1
        for offset in range(tries):
            i = (index + offset) % len(self.images)
            img = self.images.load(i)
            if img is not None:
                return self.transform(img, epoch, i), self.images.labels[i], int(offset > 0)
        if self.replace_unreadable:
            raise DataError(f"None of the {len(self.images)} training images can be decoded (each header looked "
                            f"like an image). Check the files, e.g. open one with Pillow.")
        return None


def collate_skipping(batch: list[tuple[Any, int, int] | None], stack: Callable[[list[Any]], Any] = torch.stack
                     ) -> tuple[Any, torch.Tensor, int]:
    """Stack the readable samples: (images (B, C, H, W), labels (B,), number of unreadable images met).
    ``stack``: how the samples' images become one batch (default ``torch.stack``; patch sequences are padded)."""
    good = [b for b in batch if b is not None]
    skipped = len(batch) - len(good) + sum(b[2] for b in good)
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), skipped
    labels = [b[1] for b in good]
    if isinstance(labels[0], torch.Tensor):  # multi-hot (K,) targets of multi-label data -> (B, K)
        return stack([b[0] for b in good]), torch.stack(labels).float(), skipped
    return stack([b[0] for b in good]), torch.tensor(labels, dtype=torch.long), skipped
