"""Images at their own aspect ratio as patch sequences: the input of native-resolution (NaFlex) ViTs.

Each image is resized, keeping its aspect ratio, to the largest size of whole patches that fits a patch
budget (``max_num_patches``), cut into patches of ``patch_size * patch_size * channels`` values and padded to
a common length, with a mask that says which rows are patches and the grid (rows, columns) of each image. The
size rule, the patch order (row-major patches, each flattened as (patch row, patch column, channel)) and the
arithmetic (Pillow resize, float32 rescale and normalise) are those of transformers' ``Siglip2ImageProcessorPil``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from .config import HALF
from .data.images import to_mode
from .data.transforms import normalize, resample_filter, to_tensor
from .errors import ConfigError, ImageError, InputSizeError
from .model import pretrained_cfg_of_model
from .processor import ImageInput, ImageProcessor, as_pil_image

PAD_TO = ("budget", "longest")  # pad every sequence to max_num_patches, or to the longest in the batch



def size_for_patch_budget(height: int, width: int, *, patch_size: int, max_num_patches: int,
                          eps: float = 1e-5) -> tuple[int, int]:
    """The (height, width) in whole patches, aspect ratio kept, with at most ``max_num_patches`` patches.

    A binary search over the scale, as transformers' ``get_image_size_for_max_num_patches`` does (each side
    rounded up to a multiple of the patch size, at least one patch), so the grids are the same.
    """
    if height < 1 or width < 1:
        raise InputSizeError(f"An image of {height}x{width} pixels has no patches; give an image at least 1x1.")
    if max_num_patches < 1:
        raise ConfigError(f"max_num_patches={max_num_patches} is not allowed: expected a positive integer.")

    def scaled(scale: float, size: int) -> int:
        return int(max(patch_size, math.ceil(size * scale / patch_size) * patch_size))

    low, high = eps / 10, 100.0
    while high - low >= eps:
        scale = (low + high) / 2
        patches = (scaled(scale, height) / patch_size) * (scaled(scale, width) / patch_size)
        low, high = (scale, high) if patches <= max_num_patches else (low, scale)
    return scaled(low, height), scaled(low, width)


def to_patches(pixels: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(C, H, W) with H and W multiples of the patch size -> (h * w, patch_size * patch_size * C)."""
    C, H, W = pixels.shape
    h, w = H // patch_size, W // patch_size
    x = pixels.reshape(C, h, patch_size, w, patch_size)  # (C, H, W) -> (C, h, p, w, p)
    return x.permute(1, 3, 2, 4, 0).reshape(h * w, -1)  # -> (h, w, p, p, C) -> (h*w, p*p*C)


def from_patches(patches: torch.Tensor, grid: tuple[int, int], patch_size: int, channels: int) -> torch.Tensor:
    """The inverse of ``to_patches``: (h * w, p * p * C) -> (C, h * p, w * p)."""
    h, w = grid
    x = patches[: h * w].reshape(h, w, patch_size, patch_size, channels)  # (h*w, p*p*C) -> (h, w, p, p, C)
    return x.permute(4, 0, 2, 1, 3).reshape(channels, h * patch_size, w * patch_size)


@dataclass
class PatchBatch:
    """Images as padded patch sequences.

    ``patches``: (B, L, patch_size * patch_size * C) float; ``mask``: (B, L) bool, True where a row is a patch;
    ``grids``: (B, 2) long, each image's (rows, columns) of patches (``rows * columns`` of its rows are real).
    """

    patches: torch.Tensor
    mask: torch.Tensor
    grids: torch.Tensor

    def __len__(self) -> int:
        return self.patches.shape[0]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None, *,
           non_blocking: bool = False) -> PatchBatch:
        """On ``device`` with float patches in ``dtype`` (``batch.to(torch.bfloat16)`` casts, as a tensor's does)."""
        if isinstance(device, torch.dtype):
            device, dtype = None, device
        return PatchBatch(self.patches.to(device=device, dtype=dtype, non_blocking=non_blocking),
                          self.mask.to(device, non_blocking=non_blocking),
                          self.grids.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> PatchBatch:
        """Page-locked copies (what a DataLoader with ``pin_memory`` asks of a batch)."""
        return PatchBatch(self.patches.pin_memory(), self.mask.pin_memory(), self.grids.pin_memory())

    def select(self, index: int | slice) -> PatchBatch:
        """A sub-batch (rows of every tensor), e.g. one image as ``batch.select(slice(i, i + 1))``."""
        index = slice(index, index + 1) if isinstance(index, int) else index
        return PatchBatch(self.patches[index], self.mask[index], self.grids[index])

    def chunk(self, chunks: int) -> list[PatchBatch]:
        """Up to ``chunks`` sub-batches of consecutive images (as ``torch.chunk`` splits a tensor), each trimmed
        to its own longest sequence."""
        parts = []
        for index in torch.arange(len(self)).chunk(chunks):
            part = self.select(slice(int(index[0]), int(index[-1]) + 1))
            length = int(part.mask.sum(dim=1).max())
            parts.append(PatchBatch(part.patches[:, :length], part.mask[:, :length], part.grids))
        return parts

    @property
    def tokens(self) -> int:
        """Real patches in the batch (padding excluded)."""
        return int(self.mask.sum())


def pad_sequences(sequences: Sequence[torch.Tensor], grids: Sequence[tuple[int, int]], *,
                  length: int | None = None) -> PatchBatch:
    """Stack patch sequences (N_i, P) padded with zeros to ``length`` (default: the longest) into a PatchBatch."""
    if not sequences:
        raise ImageError("No images to batch; give at least one image.")
    longest = max(s.shape[0] for s in sequences)
    length = longest if length is None else length
    if length < longest:
        raise InputSizeError(f"A sequence of {longest} patches does not fit the padded length {length}.")
    out = sequences[0].new_zeros(len(sequences), length, sequences[0].shape[1])  # (B, L, P)
    mask = torch.zeros(len(sequences), length, dtype=torch.bool)
    for i, seq in enumerate(sequences):
        out[i, : seq.shape[0]] = seq
        mask[i, : seq.shape[0]] = True
    return PatchBatch(out, mask, torch.tensor([list(g) for g in grids], dtype=torch.long))


class PatchProcessor:
    """Images -> ``PatchBatch`` at each image's own aspect ratio, within a patch budget.

    ``patch_size``, ``max_num_patches``: the model's patch and the budget per image. ``pad_to``: 'budget' pads
    every sequence to ``max_num_patches`` (what transformers' processor returns), 'longest' to the longest
    image of the batch (fewer wasted tokens; the outputs are the same, since padding is masked).
    """

    def __init__(self, *, patch_size: int = 16, max_num_patches: int = 256, interpolation: str = "bilinear",
                 mean: Sequence[float] = HALF, std: Sequence[float] = HALF, mode: str = "RGB",
                 pad_to: str = "budget") -> None:
        if not isinstance(patch_size, int) or isinstance(patch_size, bool) or patch_size < 1:
            raise ConfigError(f"patch_size={patch_size!r} is not allowed: expected a positive integer.")
        if not isinstance(max_num_patches, int) or isinstance(max_num_patches, bool) or max_num_patches < 1:
            raise ConfigError(f"max_num_patches={max_num_patches!r} is not allowed: expected a positive integer "
                              f"(e.g. 256).")
        if pad_to not in PAD_TO:
            raise ConfigError(f"pad_to={pad_to!r} is not allowed: expected one of {', '.join(PAD_TO)}.")
        resample_filter(interpolation)  # refuses an unknown name now, not at the first image
        self.patch_size, self.max_num_patches, self.interpolation = patch_size, max_num_patches, interpolation
        self.mean, self.std, self.mode, self.pad_to = tuple(mean), tuple(std), mode, pad_to

    @classmethod
    def from_model(cls, model: torch.nn.Module, *, max_num_patches: int | None = None, **overrides: Any
                   ) -> PatchProcessor:
        """The patch-sequence preprocessing of ``model``: its patch size, and the mean, std, interpolation and
        patch budget of its pretrained cfg. ``max_num_patches`` defaults to the checkpoint's budget (NaFlex
        models) or, for a fixed-size ViT, its configured number of patches (224 / 16: 196)."""
        config = getattr(model, "config", None)
        if config is None or not hasattr(config, "patch_size"):
            raise ConfigError(f"{type(model).__name__} has no ViTConfig to read its patch size from; pass "
                              f"PatchProcessor(patch_size=..., max_num_patches=...) instead.")
        ph, pw = config.patch_size
        if ph != pw:
            raise ConfigError(f"Patch sequences need square patches; this model's are {ph}x{pw}.")
        pcfg = pretrained_cfg_of_model(model)
        budget = max_num_patches or getattr(pcfg, "max_num_patches", None) or config.num_patches
        settings: dict[str, Any] = {"patch_size": ph, "max_num_patches": budget,
                                    "mode": "L" if config.in_chans == 1 else "RGB"}
        if pcfg is not None:
            settings.update(mean=pcfg.mean, std=pcfg.std, interpolation=pcfg.interpolation)
        return cls(**{**settings, **overrides})

    def size_for(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) in pixels that an image of this size is resized to."""
        return size_for_patch_budget(height, width, patch_size=self.patch_size, max_num_patches=self.max_num_patches)

    def transform_image(self, img: Image.Image) -> Image.Image:
        """The geometric part only: the resize to whole patches (for display and overlays)."""
        img = to_mode(img, self.mode)
        h, w = self.size_for(img.height, img.width)
        return img.resize((w, h), resample=resample_filter(self.interpolation))

    def preprocess_one(self, image: ImageInput) -> tuple[torch.Tensor, tuple[int, int]]:
        """One image -> its patches (h * w, p * p * C) and grid (h, w)."""
        img = self.transform_image(as_pil_image(image, self.mode))
        x = normalize(to_tensor(img), self.mean, self.std)  # (C, H, W) float32
        return to_patches(x, self.patch_size), (img.height // self.patch_size, img.width // self.patch_size)

    def collate(self, items: Sequence[tuple[torch.Tensor, tuple[int, int]]]) -> PatchBatch:
        """Preprocessed images (``preprocess_one``'s patches and grids) as one padded batch."""
        length = self.max_num_patches if self.pad_to == "budget" else None
        return pad_sequences([p for p, _ in items], [g for _, g in items], length=length)

    def __call__(self, images: ImageInput | Sequence[ImageInput]) -> PatchBatch:
        if isinstance(images, (Image.Image, str, os.PathLike)) or (isinstance(images, np.ndarray) and images.ndim <= 3):
            images = [images]
        return self.collate([self.preprocess_one(img) for img in images])

    def view_box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The part of a ``width`` x ``height`` image the model sees: all of it (no crop)."""
        return 0.0, 0.0, float(width), float(height)

    def to_dict(self) -> dict[str, Any]:
        return {"patch_size": self.patch_size, "max_num_patches": self.max_num_patches,
                "interpolation": self.interpolation, "mean": list(self.mean), "std": list(self.std),
                "mode": self.mode, "pad_to": self.pad_to}

    def __repr__(self) -> str:
        return f"PatchProcessor({', '.join(f'{k}={v!r}' for k, v in self.to_dict().items())})"


def run_by_grid(fn: Any, batch: PatchBatch, *, patch_size: int, channels: int) -> torch.Tensor:
    """``fn`` (images (n, C, H, W) -> outputs (n, ...)) on a patch batch, one call per distinct grid: the images
    of each grid rebuilt from their patches, so a runner that takes images of any size (an exported ONNX or
    OpenVINO graph, a compiled model) serves images at their own aspect ratio with no padding. Outputs come
    back in the batch's order."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (h, w) in enumerate(batch.grids.tolist()):
        groups.setdefault((h, w), []).append(i)
    outs: list[torch.Tensor | None] = [None] * len(batch)
    for grid, index in groups.items():
        # each (h*w, p*p*C) -> (C, h*p, w*p), stacked (n, C, H, W)
        pixels = torch.stack([from_patches(batch.patches[i], grid, patch_size, channels) for i in index])
        for i, y in zip(index, fn(pixels)):
            outs[i] = y
    return torch.stack(outs)  # type: ignore[arg-type]


def processor_for(model: torch.nn.Module, *, max_patches: int | None = None) -> ImageProcessor | PatchProcessor:
    """The preprocessing the uses run ``model`` with: patch sequences at each image's own aspect ratio when
    ``max_patches`` is given or the checkpoint is a native-aspect one (``pretrained_cfg.max_num_patches``),
    padded to the longest image of each batch; else the fixed-size ``ImageProcessor``."""
    native = getattr(pretrained_cfg_of_model(model), "max_num_patches", None)
    if max_patches is None and native is None:
        return ImageProcessor.from_model(model)
    if max_patches is not None and (not isinstance(max_patches, int) or isinstance(max_patches, bool)
                                    or max_patches < 1):
        raise ConfigError(f"max_patches={max_patches!r} is not allowed: expected a positive number of patches "
                          f"per image (e.g. 256).")
    return PatchProcessor.from_model(model, max_num_patches=max_patches, pad_to="longest")
