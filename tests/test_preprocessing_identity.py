"""PretrainedCfg is the one description of preprocessing: for every family and registry entry,
``ImageProcessor.from_pretrained(x)``, ``ImageProcessor.from_model(load_model(x))`` and what ``predict``,
``extract_features`` and ``attention_map`` feed the model are the same pixels, on real photos (one of them 80x40).
An HF folder written by vitkit gives transformers' own processor the same pixels, and class names travel both ways."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import vitkit
from vitkit.cli import main
from vitkit.config import IMAGENET_MEAN, IMAGENET_STD, PretrainedCfg
from vitkit.processor import ImageProcessor

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=3)
CFGS = {  # preprocessing a model may carry
    "center-bicubic": PretrainedCfg(input_size=(3, 32, 32), crop_pct=0.875, crop_mode="center",
                                    interpolation="bicubic", mean=IMAGENET_MEAN, std=IMAGENET_STD, num_classes=3,
                                    label_names=("cat", "coffee", "rocket")),
    "squash-bilinear": PretrainedCfg(input_size=(3, 32, 32), crop_pct=1.0, crop_mode="squash",
                                     interpolation="bilinear", num_classes=3, label_names=None),
    "squash-crop": PretrainedCfg(input_size=(3, 32, 32), crop_pct=0.8, crop_mode="squash", interpolation="bicubic",
                                 num_classes=3, label_names=("a", "b", "c")),
}


@pytest.fixture(scope="module")
def pictures() -> list[Image.Image]:
    import skimage.data

    astronaut = skimage.data.astronaut()
    return [Image.fromarray(skimage.data.chelsea()), Image.fromarray(skimage.data.coffee()),
            Image.fromarray(np.ascontiguousarray(astronaut[100:180, 200:240]))]  # 80x40, taller than wide


def fed_pixels(model: torch.nn.Module, run) -> torch.Tensor:
    """The images a use feeds ``model``'s patch embedding."""
    seen: list[torch.Tensor] = []
    handle = model.patch_embed.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    try:
        run()
    finally:
        handle.remove()
    return torch.cat(seen)


def check_identity(source, pictures, tmp_path, hint: str = "") -> torch.Tensor:
    """All ways in which vitkit preprocesses for ``source`` give the same pixels; returns them."""
    from vitkit.attention import attention_map
    from vitkit.features import extract_features

    want = ImageProcessor.from_pretrained(source)(pictures)
    model = vitkit.load_model(source)
    torch.testing.assert_close(ImageProcessor.from_model(model)(pictures), want, atol=0, rtol=0, msg=hint)
    got = fed_pixels(model, lambda: vitkit.predict(pictures, model, top_k=1))
    torch.testing.assert_close(got, want, atol=0, rtol=0, msg=hint)
    files = []
    for i, img in enumerate(pictures):  # PNG is lossless: the same pixels from files
        files.append(tmp_path / f"img{i}.png")
        img.save(files[-1])
    got = fed_pixels(model, lambda: extract_features(files, tmp_path / "f.npy", model=model, batch_size=8))
    torch.testing.assert_close(got, want, atol=0, rtol=0, msg=hint)
    got = fed_pixels(model, lambda: [attention_map(img, model, method="last") for img in pictures])
    torch.testing.assert_close(got, want, atol=0, rtol=0, msg=hint)
    return want


def tiny_model(pcfg: PretrainedCfg) -> vitkit.VisionTransformer:
    model = vitkit.VisionTransformer(vitkit.ViTConfig(**TINY))
    model.pretrained_cfg = pcfg
    return model.eval()


@pytest.mark.parametrize("fmt", ["vitkit", "timm", "hf"])
@pytest.mark.parametrize("cfg", list(CFGS))
def test_every_family_reads_back_its_preprocessing(pictures, tmp_path, fmt, cfg):
    model = tiny_model(CFGS[cfg])
    path = vitkit.save_pretrained(model, tmp_path / "m", format=fmt)
    want = check_identity(path, pictures, tmp_path, f"{fmt} {cfg}")
    torch.testing.assert_close(want, ImageProcessor.from_model(model)(pictures), atol=0, rtol=0)  # as saved
    loaded = vitkit.load_model(path)
    for key in ("crop_mode", "interpolation", "mean", "std", "label_names"):
        assert getattr(loaded.pretrained_cfg, key) == getattr(CFGS[cfg], key), (fmt, key)
    # crop_pct as the resize it gives (transformers stores sizes: 32 / 0.875 is read back as 32 / 36)
    assert ImageProcessor.from_model(loaded).resize_size == ImageProcessor.from_model(model).resize_size


def test_npz_has_no_preprocessing_but_one_description(pictures, tmp_path):
    path = vitkit.save_pretrained(tiny_model(CFGS["center-bicubic"]), tmp_path / "m.npz", format="npz")
    check_identity(path, pictures, tmp_path)


def _registry_entries() -> list:
    """Every fixed-size registry name; the default run takes the first of each distinct preprocessing (input
    size, mean, std, crop, interpolation), ``-m slow`` all of them. Native-aspect models take patch sequences
    (tests/test_native.py checks their processor against transformers')."""
    seen, params = set(), []
    for name in vitkit.list_models():
        cfg = vitkit.get_entry(name).pretrained_cfg
        if cfg.max_num_patches:
            continue
        key = (cfg.input_size, cfg.mean, cfg.std, cfg.crop_pct, cfg.crop_mode, cfg.interpolation)
        params.append(pytest.param(name, marks=[pytest.mark.slow] if key in seen else []))
        seen.add(key)
    return params


@pytest.mark.parametrize("name", _registry_entries())
def test_every_registry_entry(pictures, name):
    want = ImageProcessor.from_pretrained(name)(pictures)
    torch.testing.assert_close(ImageProcessor.from_model(vitkit.create_model(name, device="meta"))(pictures), want,
                               atol=0, rtol=0)
    small = vitkit.create_model(name, depth=1, embed_dim=32, num_heads=2, mlp_ratio=1.0, num_classes=3)  # a head to run
    torch.testing.assert_close(fed_pixels(small, lambda: vitkit.predict(pictures, small, top_k=1)), want,
                               atol=0, rtol=0)


@pytest.mark.parametrize("processor_kwargs", [
    dict(size={"height": 32, "width": 32}, resample=2),  # google/vit-*: a plain resize
    dict(size={"height": 36, "width": 36}, crop_size={"height": 32, "width": 32}, do_center_crop=True, resample=3,
         image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD)),  # facebook/deit-*
    dict(size={"shortest_edge": 37}, crop_size={"height": 32, "width": 32}, do_center_crop=True),  # odd margins
], ids=["vit", "deit", "shortest-edge"])
def test_transformers_folder(transformers, pictures, tmp_path, processor_kwargs):
    """A folder written by transformers: vitkit's pixels are transformers' own, and its id2label names print."""
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                    image_size=32, patch_size=8, num_labels=3,
                                    id2label={0: "tabby", 1: "espresso", 2: "rocket"})
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path / "hf")
    reference = transformers.ViTImageProcessorPil(**processor_kwargs)
    reference.save_pretrained(tmp_path / "hf")
    want = torch.from_numpy(np.stack(reference(pictures, return_tensors="np")["pixel_values"]))
    torch.testing.assert_close(check_identity(tmp_path / "hf", pictures, tmp_path), want, atol=1e-6, rtol=0)
    assert vitkit.load_model(tmp_path / "hf").pretrained_cfg.label_names == ("tabby", "espresso", "rocket")


def test_vitkit_hf_folder_gives_transformers_the_same_pixels_and_labels(transformers, pictures, tmp_path):
    for cfg in ("center-bicubic", "squash-crop", "squash-bilinear"):
        path = vitkit.save_pretrained(tiny_model(CFGS[cfg]), tmp_path / cfg, format="hf")
        theirs = transformers.ViTImageProcessorPil.from_pretrained(path)
        want = torch.from_numpy(np.stack(theirs(pictures, return_tensors="np")["pixel_values"]))
        torch.testing.assert_close(ImageProcessor.from_pretrained(path)(pictures), want, atol=1e-6, rtol=0, msg=cfg)
    hf_model = transformers.ViTForImageClassification.from_pretrained(tmp_path / "center-bicubic")
    assert [hf_model.config.id2label[i] for i in range(3)] == ["cat", "coffee", "rocket"]


def test_predict_cli_prints_an_hf_folders_labels(transformers, tmp_path, capsys):
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                    image_size=32, patch_size=8, num_labels=2, id2label={0: "tabby", 1: "espresso"})
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path / "hf")
    Image.fromarray(np.full((40, 50, 3), 128, np.uint8)).save(tmp_path / "x.png")
    assert main(["predict", str(tmp_path / "x.png"), "--model", str(tmp_path / "hf"), "--top-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "tabby" in out and "espresso" in out and "class_" not in out


def test_timm_reads_vitkit_labels_and_crop(timm, tmp_path):
    """timm's own loader reads the label names and crop mode vitkit writes into a timm folder's config.json."""
    import json

    from timm.models._hub import _parse_model_cfg  # what timm's load_model_config_from_hf runs on config.json

    path = vitkit.save_pretrained(tiny_model(CFGS["squash-crop"]), tmp_path / "t", format="timm")
    pcfg, _, _ = _parse_model_cfg(json.loads((path / "config.json").read_text()), {})
    assert pcfg["label_names"] == ["a", "b", "c"] and pcfg["crop_mode"] == "squash" and pcfg["crop_pct"] == 0.8
