"""ImageProcessor pixel parity with transformers' ViTImageProcessorPil and timm's eval transform, on real photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vitkit import create_model, get_entry
from vitkit.errors import ConfigError, ImageError, InputSizeError, UnknownModelError
from vitkit.processor import ImageProcessor

TOL = 1e-6


@pytest.fixture(scope="module")
def pil_photos(photos) -> list[Image.Image]:
    return [Image.fromarray(a) for a in photos.values()]


def _hf(processor, images):
    return torch.from_numpy(np.stack(processor(images, return_tensors="np")["pixel_values"]))


@pytest.mark.parametrize("hf_kwargs", [
    {},  # google/vit-*: fixed 224x224, bilinear, mean/std 0.5
    {"size": {"height": 256, "width": 256}, "crop_size": {"height": 224, "width": 224}, "do_center_crop": True,
     "resample": 3, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]},  # facebook/deit-*
    {"size": {"shortest_edge": 235}, "crop_size": {"height": 224, "width": 224}, "do_center_crop": True},  # odd margins
    {"size": {"height": 255, "width": 170}, "crop_size": {"height": 225, "width": 150}, "do_center_crop": True},
    {"size": {"height": 384, "width": 384}, "resample": 3},
])
def test_parity_with_transformers(transformers, pil_photos, hf_kwargs):
    """Read through PretrainedCfg (as loading an HF folder does), the pixels are transformers' own."""
    reference = transformers.ViTImageProcessorPil(**hf_kwargs)
    ours = ImageProcessor.from_hf_config(reference.to_dict())
    expected = _hf(reference, pil_photos)
    got = ours(pil_photos)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=TOL, rtol=0)


@pytest.mark.parametrize("size,crop_pct,interpolation", [
    (224, 0.875, "bicubic"), (224, 0.9, "bilinear"), (384, 1.0, "bicubic"), ((224, 320), 0.9, "bicubic"),
    (225, 0.95, "bicubic"),  # odd sizes: torchvision's rounding of the crop offset
])
def test_parity_with_timm_eval_transform(timm, pil_photos, size, crop_pct, interpolation):
    from timm.data import create_transform

    hw = (size, size) if isinstance(size, int) else size
    reference = create_transform(input_size=(3, *hw), crop_pct=crop_pct, interpolation=interpolation,
                                 mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    ours = ImageProcessor(size=size, crop_pct=crop_pct, interpolation=interpolation)
    for img in pil_photos:
        torch.testing.assert_close(ours.preprocess_one(img), reference(img), atol=TOL, rtol=0)


@pytest.mark.parametrize("name", ["vit_base_patch16_224", "deit_small_patch16_224", "vit_base_patch16_siglip_256",
                                  "vit_small_patch14_dinov2"])
def test_from_pretrained_uses_the_registry_defaults(timm, pil_photos, name):
    from timm.data import create_transform

    cfg = get_entry(name).pretrained_cfg
    reference = create_transform(input_size=cfg.input_size, crop_pct=cfg.crop_pct, crop_mode=cfg.crop_mode,
                                 interpolation=cfg.interpolation, mean=cfg.mean, std=cfg.std)
    ours = ImageProcessor.from_pretrained(name)
    assert ours.size == tuple(cfg.input_size[1:])
    torch.testing.assert_close(ours(pil_photos[:2]), torch.stack([reference(i) for i in pil_photos[:2]]),
                               atol=TOL, rtol=0)


def test_inputs_paths_arrays_and_models(tmp_path, photos):
    path = tmp_path / "chelsea.png"
    Image.fromarray(photos["chelsea"]).save(path)
    processor = ImageProcessor.from_model(create_model("vit_digits"))
    assert processor.size == (32, 32) and processor.interpolation == "bilinear"
    from_path, from_array = processor(path), processor(photos["chelsea"])
    assert from_path.shape == (1, 3, 32, 32)
    torch.testing.assert_close(from_path, from_array)
    assert processor([path, str(path)]).shape == (2, 3, 32, 32)
    model = create_model("vit_tiny_patch16_224", img_size=160, depth=1)
    assert ImageProcessor.from_model(model).size == (160, 160)


def test_bad_settings_and_inputs():
    with pytest.raises(ConfigError, match="crop_pct"):
        ImageProcessor(crop_pct=1.5)
    with pytest.raises(ConfigError, match="resize_mode"):
        ImageProcessor(resize_mode="stretch")
    with pytest.raises(ConfigError, match="interpolation"):
        ImageProcessor(interpolation="magic")
    with pytest.raises(ConfigError, match="size"):
        ImageProcessor(size=0)
    with pytest.raises(ImageError, match="uint8"):
        ImageProcessor()(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ImageError, match="at least one"):
        ImageProcessor()([])
    with pytest.raises(UnknownModelError, match="vit_base_patch16_224"):
        ImageProcessor.from_pretrained("vit_base_patch16_224x")
    with pytest.raises(InputSizeError, match="differ in size"):
        ImageProcessor(do_center_crop=False)([np.zeros((20, 30, 3), np.uint8), np.zeros((30, 20, 3), np.uint8)])


def test_from_pretrained_reads_a_hugging_face_folder(transformers, pil_photos, tmp_path):
    reference = transformers.ViTImageProcessorPil(size={"height": 160, "width": 160}, resample=3)
    reference.save_pretrained(tmp_path)
    ours = ImageProcessor.from_pretrained(tmp_path)
    assert ours.size == (160, 160) and ours.resize_mode == "fixed" and ours.interpolation == "bicubic"
    torch.testing.assert_close(ours(pil_photos[:2]), _hf(reference, pil_photos[:2]), atol=TOL, rtol=0)


def test_view_box_is_the_part_of_the_image_the_model_sees():
    """600x400 with timm's rule at 224 / 0.9: shorter side to 248 (372x248), centre crop 224 at (74, 12)."""
    box = ImageProcessor(size=224, crop_pct=0.9).view_box(600, 400)
    assert box == pytest.approx((74 * 600 / 372, 12 * 400 / 248, 298 * 600 / 372, 236 * 400 / 248))
    assert ImageProcessor(size=224, resize_mode="fixed", do_center_crop=False).view_box(600, 400) == (0, 0, 600, 400)
    import skimage.data

    img = Image.fromarray(skimage.data.coffee())  # 600x400
    proc = ImageProcessor(size=224, crop_pct=0.9, interpolation="bilinear")
    # the box, cut from the photo and resized to the model's input, is what the processor makes (up to resampling)
    cut = np.asarray(img.crop(tuple(round(v) for v in box)).resize((224, 224), Image.Resampling.BILINEAR), np.float32)
    assert np.abs(cut - np.asarray(proc.transform_image(img), np.float32)).mean() < 3
    shifted = np.asarray(img.crop((0, 0, 361, 361)).resize((224, 224), Image.Resampling.BILINEAR), np.float32)
    assert np.abs(shifted - np.asarray(proc.transform_image(img), np.float32)).mean() > 10  # another box differs
