"""Building what a run needs: the model (head sized to the data), transforms, loaders, determinism."""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..config import PretrainedCfg, ViTConfig
from ..data.augment import SeededTransform, TrainTransform
from ..data.datasets import DIGITS_SOURCE, DataSplits, LabelledImages, TransformedImages, collate_skipping
from ..data.labelfiles import is_multi_label
from ..errors import ConfigError, DataError
from ..fileio import parse_json, read_regular_bytes
from ..patches import PatchBatch, PatchProcessor, pad_sequences, processor_for, size_for_patch_budget, to_patches
from ..runtime import load_model
from ..weights import build, load_pretrained
from .config import AugmentSettings


def seed_everything(seed: int) -> None:
    """Seed every global generator a run draws from."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def run_settings(*, deterministic: bool, threads: int | None) -> Iterator[None]:
    """Deterministic kernels and a thread count for the length of a run; the caller's settings come back after."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads(), torch.backends.cudnn.benchmark)
    try:
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        if threads:
            torch.set_num_threads(threads)
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.set_num_threads(before[1])
        torch.backends.cudnn.benchmark = before[2]


class _DropNewHead(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("newly initialized")


@contextlib.contextmanager
def quiet_new_head(enabled: bool) -> Iterator[None]:
    """Silence the weight loader's 'newly initialized: head...' while ``enabled`` (a resume, whose checkpoint
    replaces every weight right after: nothing stays newly initialized)."""
    drop, target = _DropNewHead(), logging.getLogger("vitkit.weights.load")
    if enabled:
        target.addFilter(drop)
    try:
        yield
    finally:
        target.removeFilter(drop)


def _model_from_json(path: Path, num_classes: int, weights: str | None, overrides: dict[str, Any]) -> torch.nn.Module:
    """A model from a JSON file of ViTConfig fields (optionally with weights loaded into it)."""
    fields = parse_json(read_regular_bytes(path, what="model config", max_bytes=1 << 20, error=ConfigError),
                        f"Model config {str(path)!r}", error=ConfigError,
                        fix='Expected a JSON object of ViTConfig fields, e.g. {"embed_dim": 192, "depth": 12, ...}.')
    if not isinstance(fields, dict):
        raise ConfigError(f"Model config {str(path)!r} holds a JSON {type(fields).__name__}; expected an object "
                          f"of ViTConfig fields.")
    config = ViTConfig.from_dict(fields.get("config", fields)).replace(num_classes=num_classes, **overrides)
    pcfg = PretrainedCfg(input_size=(config.in_chans, *config.img_size), num_classes=num_classes, label_names=None)
    if weights is not None:
        return load_pretrained(weights, config=config, pretrained_cfg=pcfg, model_name=path.stem)
    return build(config, pretrained_cfg=pcfg, model_name=path.stem)


def build_model(spec: str, *, num_classes: int | None, weights: str | None = None,
                overrides: dict[str, Any] | None = None, img_size: int | None = None) -> torch.nn.Module:
    """A model from a registry name (with ``weights`` from any supported checkpoint), a saved model
    folder or checkpoint, or a JSON file of ViTConfig fields; its head sized to ``num_classes``, its
    input ``img_size`` (square; position embeddings resampled) when given."""
    overrides = dict(overrides or {})
    if img_size is not None:
        overrides["img_size"] = img_size
    if spec.endswith(".json") and Path(spec).is_file():
        return _model_from_json(Path(spec), num_classes, weights, overrides)
    return load_model(spec, weights=weights, num_classes=num_classes, **overrides)


def label_model(model: torch.nn.Module, splits: DataSplits) -> None:
    """Record the data's class names in the model's pretrained_cfg, so exports predict with names."""
    names: str | list[str] = "digits" if splits.source == DIGITS_SOURCE else list(splits.classes)
    model.pretrained_cfg = model.pretrained_cfg.replace(num_classes=len(splits.classes), label_names=names,
                                                        multi_label=is_multi_label(splits))  # sigmoid scores


def check_model_classes(model: torch.nn.Module, classes: list[str]) -> None:
    """Fail clearly when a model's head or class names do not fit the data it is evaluated on."""
    if model.num_classes != len(classes):
        raise DataError(f"The model predicts {model.num_classes} classes but the data has {len(classes)} "
                        f"({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}). Evaluate it on the data "
                        f"it was trained on.")
    names = getattr(model.pretrained_cfg, "label_names", None)
    if isinstance(names, (list, tuple)) and list(names) != list(classes):
        raise DataError(f"The model was trained on classes {list(names)[:5]}... but the data folders are "
                        f"{classes[:5]}...; evaluate it on the data it was trained on.")


@dataclass(frozen=True)
class PatchTrainTransform(TrainTransform):
    """The training augmentation of images at their own aspect ratio: the random crop (its aspect range
    relative to the image's), flip and policy, then the crop resized to the patch budget as ``PatchProcessor``
    sizes an image, and cut into patches: ``transform(img, rng) -> (patches (h*w, p*p*C), grid (h, w))``."""

    patch_size: int = 16
    max_num_patches: int = 256
    relative_ratio = True

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return size_for_patch_budget(height, width, patch_size=self.patch_size, max_num_patches=self.max_num_patches)

    def __call__(self, img: Image.Image, rng: random.Random) -> tuple[torch.Tensor, tuple[int, int]]:  # type: ignore[override]
        x = super().__call__(img, rng)  # (C, h * p, w * p)
        p = self.patch_size
        return to_patches(x, p), (x.shape[1] // p, x.shape[2] // p)


def train_transform(model: torch.nn.Module, augment: AugmentSettings, seed: int, *,
                    max_patches: int | None = None) -> SeededTransform:
    """The run's training augmentation at the model's input size and normalisation (``max_patches``: each
    image at its own aspect ratio within that many patches, as patch sequences)."""
    pcfg = model.pretrained_cfg
    common = dict(mean=tuple(pcfg.mean), std=tuple(pcfg.std), interpolation=pcfg.interpolation,
                  scale=tuple(augment.crop_scale), ratio=tuple(augment.crop_ratio), hflip=augment.hflip,
                  policy=augment.aug, magnitude=augment.magnitude, size=tuple(model.config.img_size))
    if max_patches is None:
        return SeededTransform(TrainTransform(**common), seed)
    patches = PatchProcessor.from_model(model, max_num_patches=max_patches)  # refuses non-square patches
    return SeededTransform(PatchTrainTransform(**common, patch_size=patches.patch_size,
                                               max_num_patches=patches.max_num_patches), seed)


class EvalTransform:
    """``transform(img, epoch, index)`` applying the model's evaluation preprocessing (no randomness): fixed
    size, or patch sequences with ``max_patches`` or for a native-aspect model (``patches.processor_for``)."""

    def __init__(self, model: torch.nn.Module, *, max_patches: int | None = None) -> None:
        self.processor = processor_for(model, max_patches=max_patches)

    def __call__(self, img: Image.Image, epoch: int, index: int) -> Any:
        return self.processor.preprocess_one(img)


def yields_patches(transform: Any) -> bool:
    """Whether ``transform`` makes patch sequences (batched by padding) rather than fixed-size images."""
    return isinstance(getattr(transform, "transform", None), PatchTrainTransform) or \
        isinstance(getattr(transform, "processor", None), PatchProcessor)


def stack_patches(items: list[tuple[torch.Tensor, tuple[int, int]]]) -> PatchBatch:
    """Patch sequences of one batch padded to the longest of them, with their mask and grids."""
    return pad_sequences([p for p, _ in items], [g for _, g in items])


def default_workers(images: LabelledImages, world_size: int) -> int:
    """0 for images in memory (no decoding to overlap), else a share of the cores left beside training."""
    if images.items and isinstance(images.items[0], Image.Image):
        return 0
    return max(1, min(8, (os.cpu_count() or 2) // world_size - 1))


def make_loader(images: LabelledImages, transform: Any, batch_sampler: Any, workers: int, *,
                pin_memory: bool = False, training: bool = False) -> torch.utils.data.DataLoader:
    """Batches of (images, labels, unreadable count); in training an unreadable image is replaced, not dropped."""
    data = TransformedImages(images, transform, replace_unreadable=training)
    collate = partial(collate_skipping, stack=stack_patches) if yields_patches(transform) else collate_skipping
    return torch.utils.data.DataLoader(data, batch_sampler=batch_sampler, collate_fn=collate,
                                       num_workers=workers, pin_memory=pin_memory)


def autocast(device: torch.device, precision: str) -> Any:
    """The autocast context of ``precision`` ('fp32': disabled)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def sample_indices(labels: list[int], per_class: int) -> list[int]:
    """The first ``per_class`` indices of each class, in order."""
    counts: dict[int, int] = {}
    picked = []
    for i, label in enumerate(labels):
        if counts.get(label, 0) < per_class:
            counts[label] = counts.get(label, 0) + 1
            picked.append(i)
    return picked
