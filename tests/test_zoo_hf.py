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


# ---------------------------------------------------------------------- from the folder alone, and written back
def _dinov3_config(transformers, *, gated: bool, key_bias: bool = False, hidden_act: str | None = None):
    return transformers.DINOv3ViTConfig(**TINY, patch_size=16, image_size=64, num_register_tokens=4,
                                        use_gated_mlp=gated, query_bias=True, key_bias=key_bias, value_bias=True,
                                        layerscale_value=1e-5, rope_theta=100.0, layer_norm_eps=1e-5,
                                        hidden_act=hidden_act or ("silu" if gated else "gelu"))


@pytest.mark.parametrize("gated,key_bias", [(False, False), (True, False), (False, True)])
def test_a_dinov3_folder_loads_on_its_own(transformers, tmp_path, gated, key_bias):
    """A DINOv3ViTModel folder without a model name: its config.json gives the rotary base, the bias layout (a key
    bias too: the three read as one fused bias) and the image size; pooled = transformers' pooler_output (the
    class token)."""
    ref = transformers.DINOv3ViTModel(_dinov3_config(transformers, gated=gated, key_bias=key_bias)).eval()
    _redraw(ref, 7)
    ref.save_pretrained(tmp_path)
    model = vitkit.from_pretrained(tmp_path).eval()
    c = model.config
    assert (c.rope, c.reg_tokens, c.img_size, c.k_bias) == ("dinov3", 4, (64, 64), key_bias)
    assert model.load_report.ok
    for h, w in ((64, 64), (48, 80)):
        x = _images(h, w)
        with torch.no_grad():
            out = ref(pixel_values=x)
            feats = model.forward_features(x)
            pooled = model.forward_head(feats, pre_logits=True)
        assert (feats - out.last_hidden_state).abs().max().item() <= ATOL, (h, w)
        assert (pooled - out.pooler_output).abs().max().item() <= ATOL, (h, w)


def test_a_gated_dinov3_folder_with_another_activation_is_refused(transformers, tmp_path):
    ref = transformers.DINOv3ViTModel(_dinov3_config(transformers, gated=True, hidden_act="gelu"))
    ref.save_pretrained(tmp_path)
    with pytest.raises(vitkit.errors.CheckpointError, match="hidden_act='gelu'.*SwiGLU gates with SiLU"):
        vitkit.from_pretrained(tmp_path)


def _vitkit_redrawn(name: str, seed: int, **kwargs):
    model = vitkit.create_model(name, depth=2, embed_dim=96, num_heads=4, **kwargs).eval()
    _redraw(model, seed)
    return model


# (registry name, overrides, transformers class, what of its output equals which of vitkit's)
WRITTEN = [
    ("vit_small_patch16_dinov3", {}, "DINOv3ViTModel", "features"),  # no q/k/v biases
    ("vit_small_plus_patch16_dinov3_qkvb", {}, "DINOv3ViTModel", "features"),  # gated MLP, q and v biases
    ("vit_small_patch16_dinov3", dict(qkv_bias=True, init_values=None, patch_bias=False), "DINOv3ViTModel",
     "features"),  # q, k and v biases; no layer scale (ones) or patch bias (zeros) written
    ("vit_base_patch16_clip_224", dict(img_size=32, patch_size=8, num_classes=0), "CLIPVisionModel", "pooled"),
    ("vit_base_patch16_clip_quickgelu_224", dict(img_size=32, patch_size=8), "CLIPVisionModelWithProjection",
     "projected"),
    ("aimv2_large_patch14_224", dict(img_size=32, patch_size=8), "Aimv2VisionModel", "features"),
]


@pytest.mark.parametrize("name,overrides,cls,output", WRITTEN,
                         ids=[f"{w[0]}-{w[2]}-{i}" for i, w in enumerate(WRITTEN)])
def test_a_written_tower_loads_in_transformers_with_the_same_outputs(transformers, tmp_path, name, overrides, cls,
                                                                     output):
    """save_pretrained(format='hf') writes the transformers class the model is (every parameter re-drawn); that
    class's from_pretrained gives vitkit's outputs within 1e-5 (DINOv3: at a second, non-square size too), and
    vitkit reads the folder back on its own to the same model."""
    model = _vitkit_redrawn(name, 11, **overrides)
    if output == "projected":
        with torch.no_grad():
            model.head.bias.zero_()  # CLIP's visual projection has no bias
    vitkit.save_pretrained(model, tmp_path, format="hf")
    ref = getattr(transformers, cls).from_pretrained(tmp_path).eval()
    assert type(ref).__name__ == cls
    back = vitkit.from_pretrained(tmp_path).eval()
    assert back.load_report.ok
    side = model.config.img_size[0]
    for h, w in ((side, side), (48, 80)) if cls.startswith("DINOv3") else ((side, side),):
        x = _images(h, w)
        with torch.no_grad():
            out = ref(pixel_values=x)
            feats = model.forward_features(x)
            want = {"features": out.last_hidden_state, "pooled": getattr(out, "pooler_output", None),
                    "projected": getattr(out, "image_embeds", None)}[output]
            got = {"features": feats, "pooled": model.forward_head(feats, pre_logits=True),
                   "projected": model(x)}[output]
            again = back.forward_features(x)
        assert got.shape == want.shape
        assert (got - want).abs().max().item() <= ATOL, (h, w)
        assert (again - feats).abs().max().item() <= ATOL, (h, w)


@pytest.mark.parametrize("name,overrides,match", [
    ("vit_base_patch16_clip_quickgelu_224", dict(img_size=32, patch_size=8), "a head with a bias"),
    ("vit_small_patch16_dinov3", dict(num_classes=10), "a classifier head \\(DINOv3ViTModel has none\\)"),
    ("aimv2_large_patch14_224", dict(img_size=32, patch_size=8, num_classes=10),
     "a classifier head \\(Aimv2VisionModel has none\\)"),
    ("vit_base_patch16_clip_224", dict(img_size=32, patch_size=8, num_classes=0, reg_tokens=2), "register tokens"),
])
def test_what_a_tower_class_cannot_say_is_refused_by_name(tmp_path, name, overrides, match):
    model = _vitkit_redrawn(name, 12, **overrides)
    with pytest.raises(vitkit.errors.CheckpointError, match=f"Cannot save this model as transformers' .*{match}"):
        vitkit.save_pretrained(model, tmp_path / "out", format="hf")
    assert not (tmp_path / "out" / "model.safetensors").exists()


@pytest.mark.parametrize("setting,match", [(dict(is_native=True), "is_native=True"),
                                           (dict(hidden_act="gelu"), "hidden_act='gelu'")])
def test_aimv2_folders_vitkit_would_read_wrong_are_refused(transformers, tmp_path, setting, match):
    """AIMv2's native-resolution variant (sin-cos positions at each image's size) and a SwiGLU gated by another
    activation than SiLU are refused in one line instead of loaded with other numbers."""
    cfg = transformers.Aimv2VisionConfig(hidden_size=96, intermediate_size=256, num_hidden_layers=1,
                                         num_attention_heads=4, image_size=32, patch_size=8, **setting)
    transformers.Aimv2VisionModel(cfg).save_pretrained(tmp_path)
    with pytest.raises(vitkit.errors.CheckpointError, match=match):
        vitkit.from_pretrained(tmp_path)
