"""ImageProcessor: images (files, Pillow images, arrays) to the normalised tensor a model reads.

Built from a model's pretrained defaults (``from_model``, ``from_pretrained``) or explicit settings.
Two resize rules cover the published checkpoints: timm's evaluation transform (scale the shorter side
to ``size / crop_pct``, then centre-crop ``size``) and Hugging Face's ``ViTImageProcessor`` (resize to a
fixed size, optionally centre-crop). Pixel values equal those references' for the same settings.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .config import IMAGENET_MEAN, IMAGENET_STD, PretrainedCfg
from .data.images import load_image, to_mode
from .data.transforms import (
    center_crop,
    crop_offset,
    keep_ratio_target,
    normalize,
    pair,
    resample_filter,
    resize,
    resize_and_crop,
    to_tensor,
)
from .errors import ConfigError, ImageError, InputSizeError
from .model import pretrained_cfg_of_model
from .runtime import borrowed, pretrained_cfg_of
from .weights.hf import processor_to_pretrained_cfg
from .weights.readers import read_json

RESIZE_MODES = ("shorter", "fixed", "none")
ImageInput = Image.Image | str | os.PathLike | np.ndarray


class ImageProcessor:
    """Resize, centre-crop, rescale and normalise images into a float tensor (B, C, H, W).

    ``size``: the output (h, w). ``resize_mode``: 'shorter' scales the shorter side to ``resize_size``
    keeping the aspect (timm), 'fixed' resizes to exactly ``resize_size`` (Hugging Face), 'none' skips
    resizing. ``resize_size`` defaults to ``floor(size / crop_pct)``. ``crop_rounding`` places an odd
    crop margin like torchvision ('round') or Hugging Face ('floor').
    """

    def __init__(
        self,
        *,
        size: int | tuple[int, int] = 224,
        crop_pct: float = 1.0,
        resize_mode: str = "shorter",
        resize_size: int | tuple[int, int] | None = None,
        interpolation: str | int = "bicubic",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        do_center_crop: bool = True,
        crop_rounding: str = "round",
        rescale_factor: float | None = 1 / 255,
        do_normalize: bool = True,
        mode: str = "RGB",
    ) -> None:
        if resize_mode not in RESIZE_MODES:
            raise ConfigError(f"resize_mode={resize_mode!r} is not supported: expected one of {RESIZE_MODES}.")
        if not 0 < crop_pct <= 1.0:
            raise ConfigError(f"crop_pct={crop_pct!r} is not allowed: expected a fraction in (0, 1].")
        if crop_rounding not in ("round", "floor"):
            raise ConfigError(f"crop_rounding={crop_rounding!r} is not supported: expected 'round' or 'floor'.")
        self.size = pair(size)
        self.crop_pct = float(crop_pct)
        self.resize_mode = resize_mode
        if resize_size is None:
            resize_size = PretrainedCfg(input_size=(3, *self.size), crop_pct=crop_pct).resize_size
        self.resize_size = pair(resize_size, "resize_size")
        self.interpolation = resample_filter(interpolation).name.lower()
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.do_center_crop = do_center_crop
        self.crop_rounding = crop_rounding
        self.rescale_factor = rescale_factor
        self.do_normalize = do_normalize
        self.mode = mode
        channels = 1 if mode == "L" else 3
        if do_normalize and (len(self.mean) != channels or len(self.std) != channels):
            raise ConfigError(f"mean and std need {channels} values for mode {mode!r}, got "
                                 f"{len(self.mean)} and {len(self.std)}.")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained_cfg(cls, cfg: PretrainedCfg, **overrides: Any) -> ImageProcessor:
        """The evaluation preprocessing of a ``PretrainedCfg``: timm's rule (shorter side to size / crop_pct,
        centre crop) or, for ``crop_mode='squash'`` (SigLIP), a resize of the whole image to the input size."""
        settings = dict(size=tuple(cfg.input_size[1:]), crop_pct=cfg.crop_pct, interpolation=cfg.interpolation,
                        mean=cfg.mean, std=cfg.std, mode="L" if cfg.input_size[0] == 1 else "RGB",
                        resize_mode="fixed" if cfg.crop_mode == "squash" else "shorter",
                        crop_rounding=cfg.crop_rounding)
        return cls(**{**settings, **overrides})

    @classmethod
    def from_model(cls, model: torch.nn.Module, **overrides: Any) -> ImageProcessor:
        """The preprocessing ``model`` expects, from its ``pretrained_cfg`` (and its configured image size)."""
        cfg = pretrained_cfg_of_model(model)
        if cfg is None:
            raise ConfigError(f"{type(model).__name__} has no pretrained_cfg to read its preprocessing from; "
                              f"build it with vitkit.create_model or give ImageProcessor explicit settings.")
        config = getattr(model, "config", None)
        if config is not None and tuple(cfg.input_size[1:]) != tuple(config.img_size):
            cfg = cfg.replace(input_size=(config.in_chans, *config.img_size))
        return cls.from_pretrained_cfg(cfg, **overrides)

    @classmethod
    def from_hf_config(cls, config: dict[str, Any], where: str = "preprocessor_config.json",
                       **overrides: Any) -> ImageProcessor:
        """From a Hugging Face ``preprocessor_config.json`` dict (ViT/DeiT-style image processors), read into a
        ``PretrainedCfg`` as loading an HF folder does (a setting it cannot express raises CheckpointError)."""
        fields = processor_to_pretrained_cfg(config, where)
        return cls.from_pretrained_cfg(PretrainedCfg.from_dict(fields), **overrides)

    @classmethod
    def from_pretrained(cls, name_or_source: str | os.PathLike, **overrides: Any) -> ImageProcessor:
        """From a registry name, or any source ``vitkit.load_model`` reads (a saved vitkit model, a Hugging Face
        folder, a checkpoint, an ``hf-hub:`` id): the ``PretrainedCfg`` a model loaded from it gets, read off the
        checkpoint's headers and config files only (no weights are loaded), so the pixels are those that
        ``predict``, ``features`` and ``attention`` give that model."""
        folder = Path(os.fspath(name_or_source))
        hf_file = folder / "preprocessor_config.json"
        if hf_file.is_file() and not (folder / "config.json").is_file():  # a processor saved on its own
            return cls.from_hf_config(read_json(hf_file), os.fspath(hf_file), **overrides)
        return cls.from_pretrained_cfg(pretrained_cfg_of(os.fspath(name_or_source)), **overrides)

    # ------------------------------------------------------------------ processing
    def _target(self, width: int, height: int) -> tuple[int, int] | None:
        """(h, w) an image of ``width`` x ``height`` is resized to before the crop (None: not resized)."""
        if self.resize_mode == "shorter":
            return keep_ratio_target(height, width, self.resize_size)
        if self.resize_mode == "fixed":
            return pair(self.resize_size)
        return None

    def view_box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """(left, top, right, bottom) of the part of a ``width`` x ``height`` image that the processed image
        shows, in the image's pixels (for drawing a map of the model's input over the original image)."""
        th, tw = self._target(width, height) or (height, width)
        left, top, right, bottom = 0.0, 0.0, float(tw), float(th)
        if self.do_center_crop:
            top = float(crop_offset(th, self.size[0], self.crop_rounding))
            left = float(crop_offset(tw, self.size[1], self.crop_rounding))
            right, bottom = left + self.size[1], top + self.size[0]
        sx, sy = width / tw, height / th
        return (max(left * sx, 0.0), max(top * sy, 0.0), min(right * sx, width), min(bottom * sy, height))

    def transform_image(self, img: Image.Image) -> Image.Image:
        """The geometric part only: resize and centre-crop (for display and overlays). A thin image is resized
        only where the crop falls (``resize_and_crop``), so a 1x20000 strip takes the memory of the crop."""
        img = to_mode(img, self.mode)
        target = self._target(img.width, img.height)
        if target is not None and self.do_center_crop:
            return resize_and_crop(img, target, self.size, interpolation=self.interpolation,
                                   rounding=self.crop_rounding)
        if target is not None:
            img = resize(img, target, self.interpolation)
        if self.do_center_crop:
            img = center_crop(img, self.size, rounding=self.crop_rounding)
        return img

    def preprocess_one(self, image: ImageInput) -> torch.Tensor:
        """One image to a float32 tensor (C, H, W)."""
        x = to_tensor(self.transform_image(as_pil_image(image, self.mode)), self.rescale_factor)
        return normalize(x, self.mean, self.std) if self.do_normalize else x

    def __call__(self, images: ImageInput | Sequence[ImageInput] | None = None, *,
                 return_tensors: str | None = None) -> torch.Tensor | PixelBatch:
        """One image or a list of them to a float32 tensor (B, C, H, W).

        ``return_tensors='pt'`` (or ``'np'``) returns ``{"pixel_values": ...}`` instead, as transformers'
        processors do, so ``model(**processor(images=img, return_tensors="pt"))`` works.
        """
        if return_tensors not in (None, "pt", "np"):
            raise ConfigError(f"return_tensors={return_tensors!r} is not supported: expected 'pt' (torch), 'np' "
                              f"(numpy) or None (a tensor).")
        if images is None:
            raise ImageError("No images given to the processor; pass processor(images) or processor(images=...).")
        pixels = self._batch(images)
        if return_tensors is None:
            return pixels
        return PixelBatch(pixel_values=pixels if return_tensors == "pt" else pixels.numpy())

    def collate(self, items: Sequence[torch.Tensor]) -> torch.Tensor:
        """Preprocessed images (``preprocess_one``'s tensors) as one batch: list of (C, H, W) -> (B, C, H, W)."""
        return torch.stack(list(items))

    def _batch(self, images: ImageInput | Sequence[ImageInput]) -> torch.Tensor:
        arrays = (np.ndarray, torch.Tensor)
        if isinstance(images, (Image.Image, str, os.PathLike)) or (isinstance(images, arrays) and images.ndim <= 3):
            images = [images]
        tensors = [self.preprocess_one(img) for img in images]
        if not tensors:
            raise ImageError("No images given to the processor; pass at least one image.")
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) > 1:
            raise InputSizeError(f"Processed images differ in size ({sorted(shapes)}) and cannot form a batch; "
                                 f"enable do_center_crop or use resize_mode='fixed'.")
        return torch.stack(tensors)  # list of (C, H, W) -> (B, C, H, W)

    # ------------------------------------------------------------------ description
    def to_dict(self) -> dict[str, Any]:
        return {"size": list(self.size), "crop_pct": self.crop_pct, "resize_mode": self.resize_mode,
                "resize_size": list(self.resize_size), "interpolation": self.interpolation,
                "mean": list(self.mean), "std": list(self.std), "do_center_crop": self.do_center_crop,
                "crop_rounding": self.crop_rounding, "rescale_factor": self.rescale_factor,
                "do_normalize": self.do_normalize, "mode": self.mode}

    def __repr__(self) -> str:
        return f"ImageProcessor({', '.join(f'{k}={v!r}' for k, v in self.to_dict().items())})"


class PixelBatch(dict):
    """``{"pixel_values": (B, C, H, W)}`` as transformers' ``BatchFeature``: keys also read as attributes,
    ``.to(device)`` moves the tensors."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"PixelBatch has no {name!r}; it holds {', '.join(self)}.") from None

    def to(self, device: torch.device | str) -> PixelBatch:
        return PixelBatch({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.items()})


def sample_photos() -> list[Image.Image]:
    """Real photos that ship with scikit-learn (two of 427x640) and a small, tall 80x40 cut of one."""
    from sklearn.datasets import load_sample_images

    arrays = load_sample_images().images
    return [Image.fromarray(a) for a in arrays] + [Image.fromarray(np.ascontiguousarray(arrays[0][100:180, 200:240]))]


@torch.no_grad()
def compare_on_images(a: torch.nn.Module, b: torch.nn.Module, images: Sequence[ImageInput]) -> tuple[float, bool]:
    """Each model on ``images`` through its own preprocessing (``ImageProcessor.from_model``): the largest
    |difference| of their outputs (of their pooled features when their heads differ), and whether every top-1
    class agrees (True when there are no heads to compare)."""
    with borrowed(a), borrowed(b):
        heads = getattr(a, "num_classes", 0) == getattr(b, "num_classes", 0) and getattr(a, "num_classes", 0) > 0
        outs = []
        for net in (a, b):
            x = ImageProcessor.from_model(net)(images).to(next(net.parameters()).device)  # (B, C, H, W)
            out = net(x) if heads else net.forward_head(net.forward_features(x), pre_logits=True)
            outs.append(out.float().cpu())
    diff = float((outs[0] - outs[1]).abs().max())
    return diff, (not heads) or bool((outs[0].argmax(-1) == outs[1].argmax(-1)).all())


def as_pil_image(image: ImageInput, mode: str) -> Image.Image:
    """A file path, Pillow image or uint8 array (H, W[, C]) as a Pillow image."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, (str, os.PathLike)):
        return load_image(image, mode=mode)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ImageError(f"Array images must be uint8 of shape (H, W) or (H, W, C), got {image.dtype} "
                             f"{image.shape}; convert with (array * 255).astype(np.uint8).")
        return Image.fromarray(image)
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.ndim not in (2, 3):
            raise ImageError(f"Tensor images must be uint8 0-255 of shape (C, H, W) or (H, W), got {image.dtype} "
                             f"{tuple(image.shape)}; a float tensor is a model input already: call the model on it "
                             f"(or vitkit.predict(tensor) for its classes).")
        array = image.numpy(force=True)
        return Image.fromarray(array if array.ndim == 2 else array.transpose(1, 2, 0).squeeze(-1)
                               if array.shape[0] == 1 else array.transpose(1, 2, 0))  # (C, H, W) -> (H, W, C)
    raise ImageError(f"Cannot read an image from a {type(image).__name__}: expected a file path, a PIL image "
                     f"or a uint8 numpy array or tensor.")
