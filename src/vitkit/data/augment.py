"""Training augmentations with Pillow and torch (no torchvision).

Per image: random resized crop, horizontal flip, then a policy (TrivialAugment: one random op at a
random strength; RandAugment: N random ops at strength M), then to a normalised tensor. Per batch:
mixup / cutmix with soft targets. Every random draw comes from a ``random.Random`` (per image) or a
``torch.Generator`` (per batch) the caller seeds, so a run is repeatable whatever the worker count,
the number of processes or where it resumed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image, ImageEnhance, ImageOps

from ..choices import AUGMENT_POLICIES
from ..errors import ConfigError
from .transforms import normalize, resample_filter, to_tensor

POLICIES = AUGMENT_POLICIES
FILL = (128, 128, 128)
_BILINEAR = Image.Resampling.BILINEAR


def _fill(img: Image.Image) -> int | tuple[int, int, int]:
    """The grey that uncovered pixels get, in ``img``'s mode."""
    return FILL[0] if img.mode == "L" else FILL


def _affine(img: Image.Image, coeffs: tuple[float, ...]) -> Image.Image:
    return img.transform(img.size, Image.Transform.AFFINE, coeffs, resample=_BILINEAR, fillcolor=_fill(img))


def _enhance(kind: type) -> Callable[[Image.Image, float], Image.Image]:
    return lambda img, m: kind(img).enhance(1.0 + m)


# name -> (op(img, magnitude), largest magnitude, signed); the ranges of RandAugment (Cubuk et al. 2020).
# Geometric ops come first: ``geometric_only`` keeps just those (for data such as digits).
OPS: dict[str, tuple[Callable[[Image.Image, float], Image.Image], float, bool]] = {
    "rotate": (lambda img, m: img.rotate(m, resample=_BILINEAR, fillcolor=_fill(img)), 30.0, True),
    "shear_x": (lambda img, m: _affine(img, (1.0, m, 0.0, 0.0, 1.0, 0.0)), 0.3, True),
    "shear_y": (lambda img, m: _affine(img, (1.0, 0.0, 0.0, m, 1.0, 0.0)), 0.3, True),
    "translate_x": (lambda img, m: _affine(img, (1.0, 0.0, m * img.width, 0.0, 1.0, 0.0)), 0.45, True),
    "translate_y": (lambda img, m: _affine(img, (1.0, 0.0, 0.0, 0.0, 1.0, m * img.height)), 0.45, True),
    "identity": (lambda img, m: img, 0.0, False),
    "brightness": (_enhance(ImageEnhance.Brightness), 0.9, True),
    "color": (_enhance(ImageEnhance.Color), 0.9, True),
    "contrast": (_enhance(ImageEnhance.Contrast), 0.9, True),
    "sharpness": (_enhance(ImageEnhance.Sharpness), 0.9, True),
    "posterize": (lambda img, m: ImageOps.posterize(img, int(8 - round(m))), 4.0, False),
    "solarize": (lambda img, m: ImageOps.solarize(img, int(256 - m)), 256.0, False),
    "autocontrast": (lambda img, m: ImageOps.autocontrast(img), 0.0, False),
    "equalize": (lambda img, m: ImageOps.equalize(img), 0.0, False),
}
GEOMETRIC_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y", "identity")


def random_resized_crop_box(width: int, height: int, rng: random.Random, scale: tuple[float, float],
                            ratio: tuple[float, float], *, relative: bool = False) -> tuple[int, int, int, int]:
    """A (left, top, right, bottom) box of a random area fraction in ``scale`` and aspect in ``ratio``
    (``relative``: in ``ratio`` times the image's own aspect, for models that see images at their shape).

    Ten tries as in the Inception paper, then the largest centred box of an allowed aspect.
    """
    area = width * height
    if relative:
        ratio = (ratio[0] * width / height, ratio[1] * width / height)
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            return left, top, left + w, top + h
    aspect = width / height
    w, h = ((width, round(width / ratio[0])) if aspect < ratio[0] else
            (round(height * ratio[1]), height) if aspect > ratio[1] else (width, height))
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


@dataclass(frozen=True)
class TrainTransform:
    """An image's training augmentation, as data: ``transform(img, rng) -> (C, H, W)`` float tensor."""

    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bicubic"
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    policy: str = "trivial"
    num_ops: int = 2
    magnitude: int = 9
    geometric_only: bool = False

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ConfigError(f"Augmentation policy {self.policy!r} is unknown: expected one of {', '.join(POLICIES)}.")
        if not 0.0 < self.scale[0] <= self.scale[1] <= 1.0:
            raise ConfigError(f"Crop scale {self.scale} is not allowed: expected 0 < min <= max <= 1.")
        if not 0.0 <= self.hflip <= 1.0:
            raise ConfigError(f"Flip probability {self.hflip} is not allowed: expected a value in [0, 1].")
        if not 0 <= self.magnitude <= 30:
            raise ConfigError(f"RandAugment magnitude {self.magnitude} is not allowed: expected 0..30.")

    @property
    def op_names(self) -> tuple[str, ...]:
        return GEOMETRIC_OPS if self.geometric_only else tuple(OPS)

    def _apply_op(self, img: Image.Image, name: str, level: float, rng: random.Random) -> Image.Image:
        """Apply op ``name`` at ``level`` in [0, 1] of its range, with a random sign where it has one."""
        fn, top, signed = OPS[name]
        m = level * top
        if signed and rng.random() < 0.5:
            m = -m
        return fn(img, m)

    #: crop aspects relative to the image's own (subclasses that keep the image's shape)
    relative_ratio = False

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) a crop of ``height`` x ``width`` pixels is resized to: the model's input size."""
        return self.size

    def augment(self, img: Image.Image, rng: random.Random) -> Image.Image:
        """The augmented Pillow image at the model's input size."""
        box = random_resized_crop_box(img.width, img.height, rng, self.scale, self.ratio,
                                      relative=self.relative_ratio)
        h, w = self.output_size(box[3] - box[1], box[2] - box[0])
        img = img.resize((w, h), resample=resample_filter(self.interpolation), box=box)
        if rng.random() < self.hflip:
            img = ImageOps.mirror(img)
        names = self.op_names
        if self.policy == "trivial":
            img = self._apply_op(img, rng.choice(names), rng.randint(0, 30) / 30, rng)
        elif self.policy == "randaugment":
            for _ in range(self.num_ops):
                img = self._apply_op(img, rng.choice(names), self.magnitude / 30, rng)
        return img

    def __call__(self, img: Image.Image, rng: random.Random) -> torch.Tensor:
        return normalize(to_tensor(self.augment(img, rng)), self.mean, self.std)


def sample_rng(seed: int, epoch: int, index: int) -> random.Random:
    """The random source of one image in one epoch: the same wherever and whenever it is drawn."""
    return random.Random(f"{seed}/{epoch}/{index}")


@dataclass(frozen=True)
class SeededTransform:
    """``transform(img, epoch, index)``: a ``TrainTransform`` drawing from that image's own random source."""

    transform: TrainTransform
    seed: int

    def __call__(self, img: Image.Image, epoch: int, index: int) -> torch.Tensor:
        return self.transform(img, sample_rng(self.seed, epoch, index))


class MixupCutmix:
    """Mix a batch with a shuffled copy of itself: blend (mixup) or paste a box (cutmix).

    Returns the mixed images and soft targets (label smoothing included). With both alphas set, each
    batch picks one of the two with ``switch_prob`` for cutmix.
    """

    def __init__(self, *, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
                 prob: float = 1.0, switch_prob: float = 0.5, label_smoothing: float = 0.0) -> None:
        if mixup_alpha < 0 or cutmix_alpha < 0 or not 0 <= prob <= 1:
            raise ConfigError(f"mixup_alpha={mixup_alpha}, cutmix_alpha={cutmix_alpha}, prob={prob} are not allowed: "
                              "expected alphas >= 0 and a probability in [0, 1].")
        self.num_classes = num_classes
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob, self.label_smoothing = prob, switch_prob, label_smoothing

    @property
    def enabled(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def soft_targets(self, y: torch.Tensor) -> torch.Tensor:
        """(B,) class indices -> (B, num_classes) smoothed one-hot targets."""
        off = self.label_smoothing / self.num_classes
        out = torch.full((y.shape[0], self.num_classes), off, device=y.device)
        return out.scatter_(1, y.view(-1, 1), 1.0 - self.label_smoothing + off)

    @staticmethod
    def _beta(alpha: float, gen: torch.Generator) -> float:
        """A Beta(alpha, alpha) variate drawn from ``gen`` (torch.distributions takes no generator)."""
        g1 = _gamma(alpha, gen)
        return g1 / (g1 + _gamma(alpha, gen))

    def __call__(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        targets = self.soft_targets(y)
        if not self.enabled or float(torch.rand((), generator=gen)) >= self.prob:
            return x, targets
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha == 0 or
                                                float(torch.rand((), generator=gen)) < self.switch_prob)
        lam = self._beta(self.cutmix_alpha if use_cutmix else self.mixup_alpha, gen)
        perm = torch.randperm(x.shape[0], generator=gen).to(x.device)
        if use_cutmix:
            x, lam = _paste_box(x, x[perm], lam, gen)
        else:
            x = x * lam + x[perm] * (1.0 - lam)
        return x, targets * lam + targets[perm] * (1.0 - lam)


def _gamma(alpha: float, gen: torch.Generator) -> float:
    """A Gamma(alpha, 1) variate from ``gen`` (Marsaglia-Tsang, boosted for alpha < 1)."""
    boost = 1.0
    if alpha < 1.0:
        boost = float(torch.rand((), generator=gen, dtype=torch.float64)) ** (1.0 / alpha)
        alpha += 1.0
    d = alpha - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        z = float(torch.randn((), generator=gen, dtype=torch.float64))
        v = (1.0 + c * z) ** 3
        u = float(torch.rand((), generator=gen, dtype=torch.float64))
        if v > 0 and math.log(max(u, 1e-300)) < 0.5 * z * z + d - d * v + d * math.log(v):
            return d * v * boost


def _paste_box(x: torch.Tensor, other: torch.Tensor, lam: float,
               gen: torch.Generator) -> tuple[torch.Tensor, float]:
    """Paste a box of area ~(1 - lam) from ``other`` into ``x``; returns the images and the exact kept fraction."""
    H, W = x.shape[-2:]
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(H * cut), int(W * cut)
    cy, cx = (int(v) for v in torch.randint(0, max(H, W), (2,), generator=gen) % torch.tensor([H, W]))
    top, bottom = max(cy - ch // 2, 0), min(cy + ch // 2, H)
    left, right = max(cx - cw // 2, 0), min(cx + cw // 2, W)
    x = x.clone()
    x[..., top:bottom, left:right] = other[..., top:bottom, left:right]
    return x, 1.0 - (bottom - top) * (right - left) / (H * W)

