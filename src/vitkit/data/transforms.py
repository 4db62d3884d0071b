"""Evaluation transforms on Pillow images and tensors, without torchvision.

Each step reproduces the arithmetic of its reference exactly: resizing is Pillow's ``Image.resize``
(as torchvision and Hugging Face call it), the shorter-side size rule is torchvision's ``Resize(int)``,
the crop offset is torchvision's ``CenterCrop`` (``'round'``) or Hugging Face's (``'floor'``), and
scaling to [0, 1] then normalising is done in float32 as both do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import ConfigError, ImageError, InputSizeError
from .images import MAX_PIXELS

INTERPOLATIONS: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}

# Hugging Face preprocessor configs store the resample filter as Pillow's integer code
PIL_CODES = {int(v): k for k, v in INTERPOLATIONS.items()}


def pair(size: int | Sequence[int], what: str = "size") -> tuple[int, int]:
    """An int or (h, w) pair as a validated (h, w) tuple of positive ints."""
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if not (isinstance(h, int) and isinstance(w, int)) or h < 1 or w < 1:
        raise ConfigError(f"{what}={size!r} is not a valid image size: expected a positive int or (height, width).")
    return h, w


def resample_filter(interpolation: str | int) -> Image.Resampling:
    """A Pillow filter from a name ('bicubic', ...) or Pillow's integer code."""
    if isinstance(interpolation, int) and interpolation in PIL_CODES:
        interpolation = PIL_CODES[interpolation]
    try:
        return INTERPOLATIONS[str(interpolation).lower()]
    except KeyError:
        raise ConfigError(f"interpolation={interpolation!r} is not supported: expected one of "
                             f"{', '.join(INTERPOLATIONS)}.") from None


def shorter_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(h, w) after scaling the shorter side to ``size`` (torchvision ``Resize(int)``: the long side truncated)."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def keep_ratio_size(height: int, width: int, target: tuple[int, int]) -> tuple[int, int]:
    """(h, w) after scaling to cover ``target`` with the aspect kept (timm ``ResizeKeepRatio``, non-square)."""
    ratio = min(height / target[0], width / target[1])
    return round(height / ratio), round(width / ratio)


def resize(img: Image.Image, size: tuple[int, int], interpolation: str | int = "bilinear") -> Image.Image:
    """Resize to exactly (h, w); an output larger than ``MAX_PIXELS`` (a thin strip scaled up to cover a side)
    is refused before Pillow allocates it."""
    h, w = pair(size)
    if img.size == (w, h):
        return img
    if h * w > MAX_PIXELS:
        raise ImageError(f"Resizing a {img.width}x{img.height} image to {w}x{h} would make {h * w:,} pixels, more "
                         f"than the limit of {MAX_PIXELS:,}: its aspect ratio is too extreme for this input size. "
                         "Crop the image closer to square first.")
    return img.resize((w, h), resample=resample_filter(interpolation))


def keep_ratio_target(height: int, width: int, size: int | tuple[int, int]) -> tuple[int, int]:
    """(h, w) of an image resized keeping its aspect ratio so it covers ``size`` (an int: the shorter side)."""
    h, w = pair(size)
    return shorter_side_size(height, width, h) if h == w else keep_ratio_size(height, width, (h, w))


def resize_keep_ratio(img: Image.Image, size: int | tuple[int, int],
                      interpolation: str | int = "bicubic") -> Image.Image:
    """Resize keeping the aspect ratio so the image covers ``size`` (an int: the shorter side)."""
    return resize(img, keep_ratio_target(img.height, img.width, size), interpolation)


def resize_and_crop(img: Image.Image, target: tuple[int, int], crop: int | tuple[int, int], *,
                    interpolation: str | int = "bicubic", rounding: str = "round") -> Image.Image:
    """``center_crop(resize(img, target), crop)`` in bounded memory.

    When the resized image would pass ``MAX_PIXELS`` (a thin strip whose short side is scaled up to the input),
    only the crop box is resized (Pillow's ``resize(box=...)``): the same filter at the same source positions,
    so the pixels agree with resizing everything first up to Pillow's 8-bit rounding between its two passes,
    while memory stays that of the crop. Other images take the plain path, pixel for pixel as before."""
    h, w = target
    ch, cw = pair(crop, "crop size")
    if h * w <= MAX_PIXELS or h < ch or w < cw:
        return center_crop(resize(img, target, interpolation), crop, rounding=rounding)
    top, left = crop_offset(h, ch, rounding), crop_offset(w, cw, rounding)
    sx, sy = img.width / w, img.height / h
    return img.resize((cw, ch), resample=resample_filter(interpolation),
                      box=(left * sx, top * sy, (left + cw) * sx, (top + ch) * sy))


def crop_offset(length: int, crop: int, rounding: str) -> int:
    if rounding == "round":  # torchvision: int(round(x / 2.0)), Python's round half to even
        return int(round((length - crop) / 2.0))
    return (length - crop) // 2  # Hugging Face


def center_crop(img: Image.Image, size: int | tuple[int, int], *, rounding: str = "round") -> Image.Image:
    """Crop the centre (h, w); an image smaller than that is padded with black first.

    ``rounding``: 'round' places an odd margin like torchvision's ``CenterCrop``, 'floor' like Hugging Face.
    """
    if rounding not in ("round", "floor"):
        raise ConfigError(f"rounding={rounding!r} is not supported: expected 'round' or 'floor'.")
    ch, cw = pair(size, "crop size")
    if img.height < ch or img.width < cw:
        img = _pad_to(img, ch, cw, rounding)
    top, left = crop_offset(img.height, ch, rounding), crop_offset(img.width, cw, rounding)
    if (top, left, ch, cw) == (0, 0, img.height, img.width):
        return img
    return img.crop((left, top, left + cw, top + ch))


def _pad_to(img: Image.Image, height: int, width: int, rounding: str) -> Image.Image:
    """Pad with zeros to at least (height, width), the image centred (as each reference pads)."""
    new_h, new_w = max(height, img.height), max(width, img.width)
    if rounding == "round":  # torchvision puts the odd pixel after the image
        top, left = (new_h - img.height) // 2, (new_w - img.width) // 2
    else:  # Hugging Face puts it before
        top, left = math.ceil((new_h - img.height) / 2), math.ceil((new_w - img.width) / 2)
    canvas = Image.new(img.mode, (new_w, new_h))
    canvas.paste(img, (left, top))
    return canvas


def to_tensor(img: Image.Image, rescale_factor: float | None = 1 / 255) -> torch.Tensor:
    """A Pillow image to a float32 (C, H, W) tensor, multiplied by ``rescale_factor`` (None: kept as 0..255)."""
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[:, :, None]  # (H, W) -> (H, W, 1)
    t = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).to(torch.float32)  # (H, W, C) -> (C, H, W)
    if rescale_factor is None:
        return t
    if rescale_factor == 1 / 255:
        return t / 255.0  # correctly rounded, as torchvision's ToTensor and HF's float64 rescale give
    return (t.double() * rescale_factor).float()


def _per_channel(values: Sequence[float], x: torch.Tensor) -> torch.Tensor:
    """One value per channel as a (C, 1, 1) tensor in x's dtype and device, to broadcast over x."""
    return torch.tensor(values, dtype=x.dtype, device=x.device).view(-1, 1, 1)  # (C,) -> (C, 1, 1)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x - mean) / std per channel, in x's dtype; x is (C, H, W) or (B, C, H, W)."""
    channels = x.shape[-3]
    if len(mean) != channels or len(std) != channels:
        raise InputSizeError(f"mean/std have {len(mean)}/{len(std)} values but the image has {channels} channels; "
                             f"give one value per channel.")
    m, s = _per_channel(mean, x), _per_channel(std, x)
    return (x - m) / s


def denormalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Undo ``normalize``: x * std + mean."""
    m, s = _per_channel(mean, x), _per_channel(std, x)
    return x * s + m
