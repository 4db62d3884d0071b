"""One batching path for the uses (predict, features, attention): images read, preprocessed and collated batch
by batch, the next batch loading in the background while the caller computes on this one.

An image that cannot be read is not an error of the whole job: its ``ImageError`` is handed back with its
index (the use skips it and reports it). A float tensor (C, H, W) is a model input already and passes as it
is through a fixed-size processor.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import ImageError
from .patches import PatchBatch, PatchProcessor
from .processor import ImageInput, ImageProcessor

Processor = ImageProcessor | PatchProcessor


@dataclass
class Batch:
    """One batch of the images asked for: ``rows`` (their indices) read and collated into ``pixels``
    ((B, C, H, W), or a ``PatchBatch``; None when none of them could be read), ``errors`` the others'."""

    number: int
    rows: list[int]
    pixels: torch.Tensor | PatchBatch | None
    errors: dict[int, ImageError] = field(default_factory=dict)


def is_model_input(image: Any) -> bool:
    """A float tensor: preprocessed pixels, not an image to preprocess."""
    return isinstance(image, torch.Tensor) and image.is_floating_point()


def read_one(processor: Processor, image: ImageInput) -> Any:
    """One image preprocessed, or the ``ImageError`` saying why it cannot be read."""
    if is_model_input(image) and isinstance(processor, ImageProcessor):
        return image
    try:
        return processor.preprocess_one(image)
    except ImageError as exc:
        return exc


def chunks(indices: Sequence[int], size: int) -> list[list[int]]:
    """``indices`` in runs of ``size`` (the last one shorter)."""
    return [list(indices[i:i + size]) for i in range(0, len(indices), size)]


def batches(processor: Processor, images: Sequence[ImageInput], groups: Sequence[Sequence[int]], *,
            workers: int = 1) -> Iterator[Batch]:
    """Each group of ``images`` (lists of indices) as a ``Batch``, in order; ``workers`` threads read the next
    group while the caller works on this one."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as executor:
        def submit(rows: Sequence[int]) -> list[Future]:
            return [executor.submit(read_one, processor, images[i]) for i in rows]

        pending = submit(groups[0]) if groups else []
        for n, rows in enumerate(groups):
            current = pending
            pending = submit(groups[n + 1]) if n + 1 < len(groups) else []
            loaded = [f.result() for f in current]
            ok = [(i, item) for i, item in zip(rows, loaded) if not isinstance(item, ImageError)]
            yield Batch(number=n, rows=[i for i, _ in ok],
                        pixels=processor.collate([item for _, item in ok]) if ok else None,
                        errors={i: item for i, item in zip(rows, loaded) if isinstance(item, ImageError)})
