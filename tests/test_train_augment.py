"""Training augmentations without torchvision: crop, flip, TrivialAugment/RandAugment ops, mixup/cutmix."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest
import torch
from PIL import Image

from vitkit.data.augment import (
    OPS,
    MixupCutmix,
    SeededTransform,
    TrainTransform,
    random_resized_crop_box,
    sample_rng,
)
from vitkit.errors import ConfigError

HALF = (0.5, 0.5, 0.5)


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_every_op_keeps_size_and_mode(photo: Image.Image, name: str, mode: str):
    fn, top, signed = OPS[name]
    img = photo.convert(mode)
    for m in (top, -top if signed else 0.0, top / 3):
        out = fn(img, m)
        assert out.size == img.size and out.mode == mode


def test_random_resized_crop_box_stays_inside_and_respects_scale():
    rng = random.Random(0)
    for _ in range(200):
        left, top, right, bottom = random_resized_crop_box(64, 48, rng, (0.3, 1.0), (3 / 4, 4 / 3))
        assert 0 <= left < right <= 64 and 0 <= top < bottom <= 48
    # impossible aspect ratios fall back to a centred box
    box = random_resized_crop_box(64, 8, random.Random(0), (0.9, 1.0), (0.5, 0.6))
    assert box[1] == 0 and box[3] == 8 and box[2] - box[0] <= 64


@pytest.mark.parametrize("policy", ["none", "trivial", "randaugment"])
def test_train_transform_shape_values_and_repeatability(photo: Image.Image, policy: str):
    tt = TrainTransform(size=(32, 32), mean=HALF, std=HALF, policy=policy, scale=(0.2, 1.0))
    seeded = SeededTransform(tt, seed=5)
    a, b = seeded(photo, 0, 7), seeded(photo, 0, 7)
    assert a.shape == (3, 32, 32) and a.dtype == torch.float32
    assert float(a.min()) >= -1.0 - 1e-6 and float(a.max()) <= 1.0 + 1e-6
    assert torch.equal(a, b)  # same seed, epoch and index: the same image
    assert not torch.equal(a, seeded(photo, 1, 7))  # another epoch: another augmentation


def test_no_augmentation_and_full_crop_is_a_plain_resize(photo: Image.Image):
    img = photo.resize((32, 32))
    tt = TrainTransform(size=(32, 32), mean=HALF, std=HALF, policy="none", hflip=0.0, scale=(1.0, 1.0),
                        ratio=(1.0, 1.0))
    x = tt(img, sample_rng(0, 0, 0))
    expected = torch.from_numpy(np.asarray(img).transpose(2, 0, 1).astype(np.float32) / 255.0)
    torch.testing.assert_close(x, (expected - 0.5) / 0.5)


def test_flip_probability_one_mirrors(photo: Image.Image):
    base = dict(size=(48, 64), mean=HALF, std=HALF, policy="none", scale=(1.0, 1.0), ratio=(64 / 48, 64 / 48))
    plain = TrainTransform(hflip=0.0, **base)(photo, sample_rng(0, 0, 0))
    flipped = TrainTransform(hflip=1.0, **base)(photo, sample_rng(0, 0, 0))
    torch.testing.assert_close(flipped, plain.flip(-1))


@pytest.mark.parametrize("bad", [dict(policy="autoaugment"), dict(scale=(0.5, 0.2)), dict(hflip=2.0),
                                 dict(magnitude=31)])
def test_bad_settings_raise_config_error(bad: dict):
    with pytest.raises(ConfigError, match=re.escape(str(next(iter(bad.values()))))):  # the message names the value
        TrainTransform(size=(8, 8), mean=HALF, std=HALF, **bad)


@pytest.mark.parametrize("mixup, cutmix", [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_mixup_cutmix_soft_targets(mixup: float, cutmix: float):
    mix = MixupCutmix(num_classes=5, mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=0.1)
    x = torch.randn(8, 3, 16, 16)
    y = torch.arange(8) % 5
    xm, t = mix(x, y, torch.Generator().manual_seed(0))
    xm2, t2 = mix(x, y, torch.Generator().manual_seed(0))
    assert torch.equal(xm, xm2) and torch.equal(t, t2)  # the generator decides everything
    assert xm.shape == x.shape and t.shape == (8, 5)
    torch.testing.assert_close(t.sum(1), torch.ones(8))
    assert float(t.min()) >= 0.1 / 5 - 1e-6
    assert not torch.equal(xm, x)


def test_mixup_off_gives_smoothed_one_hot():
    mix = MixupCutmix(num_classes=4, label_smoothing=0.2)
    x = torch.randn(3, 3, 4, 4)
    xm, t = mix(x, torch.tensor([0, 3, 1]), torch.Generator().manual_seed(0))
    assert torch.equal(xm, x)
    torch.testing.assert_close(t[0], torch.tensor([0.85, 0.05, 0.05, 0.05]))
    with pytest.raises(ConfigError, match="mixup_alpha=-1.0"):
        MixupCutmix(num_classes=4, mixup_alpha=-1.0)
