"""Patch sequences at each image's own aspect ratio, against transformers' Siglip2ImageProcessorPil."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vitkit.errors import ConfigError, InputSizeError
from vitkit.patches import PatchProcessor, from_patches, pad_sequences, size_for_patch_budget, to_patches
from vitkit.processor import sample_photos


def _photos() -> list[Image.Image]:
    wide, _, tall = sample_photos()  # 427x640, ..., 80x40
    return [wide, tall, wide.crop((0, 0, 300, 300)), wide.crop((0, 0, 17, 333))]


@pytest.mark.parametrize("patch_size, budget", [(16, 256), (14, 64), (16, 1)])
def test_patches_masks_and_grids_equal_transformers(patch_size: int, budget: int) -> None:
    from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

    images = _photos()
    ref = Siglip2ImageProcessorPil(patch_size=patch_size, max_num_patches=budget)(images, return_tensors="pt")
    ours = PatchProcessor(patch_size=patch_size, max_num_patches=budget)(images)
    assert torch.equal(ours.grids, ref["spatial_shapes"].long())
    assert torch.equal(ours.mask, ref["pixel_attention_mask"].bool())
    torch.testing.assert_close(ours.patches, ref["pixel_values"], rtol=0, atol=1e-6)


def test_size_rule_keeps_the_aspect_and_the_budget() -> None:
    for h, w in [(427, 640), (80, 40), (1, 20000), (20000, 1), (16, 16), (5, 7)]:
        H, W = size_for_patch_budget(h, w, patch_size=16, max_num_patches=256)
        assert H % 16 == 0 and W % 16 == 0 and (H // 16) * (W // 16) <= 256
        if min(h, w) >= 40:
            assert abs((H / W) / (h / w) - 1) < 0.25  # within one patch of the image's own aspect


def test_patches_round_trip_and_padding_is_masked() -> None:
    x = torch.randn(3, 32, 48)
    p = to_patches(x, 16)
    assert p.shape == (6, 16 * 16 * 3)
    assert torch.equal(from_patches(p, (2, 3), 16, 3), x)
    batch = pad_sequences([p, p[:2]], [(2, 3), (1, 2)])
    assert batch.patches.shape == (2, 6, 768) and batch.mask.tolist() == [[True] * 6, [True] * 2 + [False] * 4]
    assert batch.tokens == 8 and torch.equal(batch.patches[1, 2:], torch.zeros(4, 768))


def test_longest_padding_gives_the_same_rows() -> None:
    images = _photos()
    budget = PatchProcessor(max_num_patches=64)(images)
    longest = PatchProcessor(max_num_patches=64, pad_to="longest")(images)
    L = longest.patches.shape[1]
    assert int(longest.mask.sum(1).max()) == L and not budget.mask[:, L:].any()
    assert torch.equal(budget.patches[:, :L], longest.patches)


def test_bad_settings_are_refused_before_any_image() -> None:
    with pytest.raises(ConfigError, match="max_num_patches=0"):
        PatchProcessor(max_num_patches=0)
    with pytest.raises(ConfigError, match="pad_to='shortest'"):
        PatchProcessor(pad_to="shortest")
    with pytest.raises(ConfigError, match="interpolation"):
        PatchProcessor(interpolation="sinc")
    with pytest.raises(InputSizeError, match="does not fit"):
        pad_sequences([torch.zeros(5, 3)], [(1, 5)], length=4)


def test_arrays_and_paths_give_the_pixels_of_the_image(tmp_path) -> None:
    img = _photos()[1]
    img.save(tmp_path / "tall.png")
    proc = PatchProcessor(max_num_patches=32)
    a, b, c = proc(img), proc(tmp_path / "tall.png"), proc(np.asarray(img))
    assert torch.equal(a.patches, b.patches) and torch.equal(a.patches, c.patches)
