"""The bundled default data: scikit-learn's 1,797 labelled 8x8 digits, as small RGB images in memory.

The 8x8 grids (ink 0..16) become 8-bit images upscaled to ``size`` x ``size`` (bilinear) with three
equal channels, so any RGB model can read them. The held-out split is a seeded, class-stratified
fraction (20% by default) shared by ``vitkit train`` and ``vitkit eval``.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from ..fileio import safe_filename

logger = logging.getLogger(__name__)

DIGITS_CLASSES = tuple(str(i) for i in range(10))
DIGITS_SIZE = 32


@lru_cache(maxsize=4)
def _digits_arrays(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, size, size) uint8 images and (N,) int64 labels; cached, the data never changes."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    grids = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)  # (N, 8, 8), ink 0..255
    images = np.stack([np.asarray(Image.fromarray(g, mode="L").resize((size, size), Image.Resampling.BILINEAR))
                       for g in grids])
    return images, bunch.target.astype(np.int64)


def load_digits_images(size: int = DIGITS_SIZE) -> tuple[list[Image.Image], list[int]]:
    """All 1,797 digits as RGB Pillow images of ``size`` x ``size`` pixels, with their labels 0..9."""
    images, labels = _digits_arrays(size)
    return [Image.fromarray(img, mode="L").convert("RGB") for img in images], labels.tolist()


def export_samples(images: list[Image.Image], labels: list[int], out_dir: str | Path, *,
                   classes: tuple[str, ...] | list[str] = DIGITS_CLASSES) -> list[Path]:
    """Write images as ``<class>_<i>.png`` (i counts per class), e.g. held-out digits to predict later."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    counts: dict[int, int] = {}
    for img, label in zip(images, labels):
        i = counts[label] = counts.get(label, -1) + 1
        path = out / f"{safe_filename(classes[label], fallback=f'class{label}')}_{i}.png"  # a name is data, not a path
        img.save(path)
        written.append(path)
    logger.info("wrote %d sample images to %s", len(written), out)
    return written
