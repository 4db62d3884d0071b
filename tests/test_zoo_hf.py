"""CLIP, DINOv3 and AIMv2 image towers from transformers folders (``save_pretrained``): CLIPVisionModel, the
vision half of CLIPModel, DINOv3ViTModel (plain and gated MLP) and Aimv2VisionModel, every parameter re-drawn,
depth 2; vitkit's features equal transformers' within 1e-5 at two input sizes."""

from __future__ import annotations

import pytest
import torch

import vitkit
from _refs import import_transformers

ATOL = 1e-5
TINY = dict(hidden_size=96, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4)
OURS = dict(embed_dim=96, depth=2, num_heads=4)


@pytest.fixture(scope="module")
def transformers():
    return import_transformers()


def _redraw(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def _images(h: int, w: int) -> torch.Tensor:
    return torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(h * w))


def _clip_config(transformers):
    return transformers.CLIPVisionConfig(**TINY, image_size=32, patch_size=8, hidden_act="quick_gelu",
                                         layer_norm_eps=1e-5)


def _saved_clip(ref, seed: int, folder, num_classes: int):
    """``ref`` re-drawn and saved to ``folder``; the vitkit CLIP model read from it."""
    _redraw(ref.eval(), seed)
    ref.save_pretrained(folder)
    return vitkit.create_model("vit_base_patch16_clip_quickgelu_224", pretrained=str(folder), img_size=32,
                               patch_size=8, num_classes=num_classes, **OURS).eval()


def test_clip_vision_model_folder(transformers, tmp_path):
    ref = transformers.CLIPVisionModel(_clip_config(transformers))
    model = _saved_clip(ref, 1, tmp_path, num_classes=0)
    x = _images(32, 32)
    with torch.no_grad():
        want = ref(pixel_values=x).pooler_output
        got = model.forward_head(model.forward_features(x), pre_logits=True)
    assert (got - want).abs().max().item() <= ATOL


def test_clip_model_vision_half_with_projection(transformers, tmp_path):
    text = transformers.CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=2, vocab_size=99)
    cfg = transformers.CLIPConfig(text_config=text.to_dict(), vision_config=_clip_config(transformers).to_dict(),
                                  projection_dim=24)
    ref = transformers.CLIPModel(cfg)
    model = _saved_clip(ref, 2, tmp_path, num_classes=24)
    x = _images(32, 32)
    with torch.no_grad():
        want = ref.get_image_features(pixel_values=x)
        want = getattr(want, "pooler_output", want)
        got = model(x)
    assert (got - want).abs().max().item() <= ATOL


@pytest.mark.parametrize("gated", [False, True])
def test_dinov3_vit_model_folder(transformers, tmp_path, gated):
    cfg = transformers.DINOv3ViTConfig(**TINY, patch_size=16, image_size=64, num_register_tokens=4,
                                       use_gated_mlp=gated, query_bias=True, key_bias=False, value_bias=True,
                                       layerscale_value=1e-5, rope_theta=100.0, layer_norm_eps=1e-5,
                                       hidden_act="silu" if gated else "gelu")
    ref = transformers.DINOv3ViTModel(cfg).eval()
    _redraw(ref, 3)
    ref.save_pretrained(tmp_path)
    name = "vit_small_plus_patch16_dinov3_qkvb" if gated else "vit_small_patch16_dinov3_qkvb"
    model = vitkit.create_model(name, pretrained=str(tmp_path), img_size=64, **OURS).eval()
    for h, w in ((64, 64), (48, 80)):
        x = _images(h, w)
        with torch.no_grad():
            want = ref(pixel_values=x).last_hidden_state
            got = model.forward_features(x)
        assert got.shape == want.shape
        assert (got - want).abs().max().item() <= ATOL, (h, w)


@pytest.mark.parametrize("by_name", [True, False])
def test_aimv2_vision_model_folder(transformers, tmp_path, by_name):
    """An Aimv2VisionModel folder: RMSNorm after the patch embedding and in the blocks, SwiGLU, no biases but the
    patch embedding's; read by name (a registry AIMv2) and from the folder alone. Its attention-pooling head is
    dropped and reported: vitkit averages the patch tokens, as timm's AIMv2 does."""
    cfg = transformers.Aimv2VisionConfig(hidden_size=96, intermediate_size=256, num_hidden_layers=2,
                                         num_attention_heads=4, image_size=32, patch_size=8, rms_norm_eps=1e-5)
    ref = transformers.Aimv2VisionModel(cfg).eval()
    _redraw(ref, 5)
    with torch.no_grad():  # RMSNorm weights around 1, as trained ones are
        for name, p in ref.named_parameters():
            if "rms_norm" in name:
                p.add_(1.0)
    ref.save_pretrained(tmp_path)
    if by_name:
        model = vitkit.create_model("aimv2_large_patch14_224", pretrained=str(tmp_path), img_size=32, patch_size=8,
                                    mlp_ratio=256 / 96, **OURS).eval()
    else:
        model = vitkit.from_pretrained(tmp_path).eval()
    report = model.load_report
    assert report.ok and "head.cls_token" in report.dropped and model.config.mlp_layer == "swiglu"
    x = _images(32, 32)  # transformers' learned AIMv2 embedding runs at its own size only (timm's parity, at two
    with torch.no_grad():  # sizes, is in test_zoo.py)
        want = ref(pixel_values=x).last_hidden_state
        got = model.forward_features(x)
    assert got.shape == want.shape and (got - want).abs().max().item() <= ATOL
