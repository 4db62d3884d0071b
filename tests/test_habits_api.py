"""timm and transformers habits on the model API: features_only / out_indices, get_classifier, default_cfg,
resolve_data_config, from_pretrained(num_labels=, torch_dtype=), output_hidden_states / output_attentions;
parity against timm and transformers on the same random weights (fp32, 1e-5)."""

from __future__ import annotations

import pytest
import torch

import vitkit
from test_weights_hf import _hf, _save
from test_weights_refs import randomize
from vitkit.model import FeatureMaps, ViTOutput

TOL = dict(atol=1e-5, rtol=1e-5)


def test_features_only_matches_timm_and_forward_intermediates(timm):
    ref = timm.create_model("vit_tiny_patch16_224", features_only=True, out_indices=(1, 3, -1), pretrained=False,
                            depth=6).eval()
    ours = vitkit.create_model("vit_tiny_patch16_224", features_only=True, out_indices=(1, 3, -1), depth=6).eval()
    assert isinstance(ours, FeatureMaps)
    missing, unexpected = ours.model.load_state_dict(ref.model.state_dict(), strict=False)
    assert set(missing) == {"head.weight", "head.bias", "norm.weight", "norm.bias"} and not unexpected  # unused
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        theirs, mine = ref(x), ours(x)
        direct = ours.model.forward_intermediates(x, [1, 3, 5], intermediates_only=True)
    assert [m.shape for m in mine] == [(2, 192, 14, 14)] * 3
    for a, b, c in zip(theirs, mine, direct):
        torch.testing.assert_close(b, a, **TOL)
        torch.testing.assert_close(b, c, atol=0, rtol=0)
    assert ours.channels() == ref.feature_info.channels() and ours.reduction() == ref.feature_info.reduction()
    assert [f["module"] for f in ours.feature_info] == ["blocks.1", "blocks.3", "blocks.5"]
    with pytest.raises(vitkit.ConfigError, match="out of range"):
        vitkit.create_model("vit_digits", features_only=True, out_indices=(7,))
    assert len(vitkit.create_model("vit_digits", features_only=True)(torch.randn(1, 3, 32, 32))) == 3  # last 3


def test_get_classifier_default_cfg_and_resolve_data_config(timm):
    from timm.data import resolve_data_config as timm_resolve

    for name in ("vit_tiny_patch16_224", "vit_base_patch16_384", "vit_large_patch32_384"):  # (SigLIP, DeiT: own)
        ref = timm.create_model(name, pretrained=False, depth=1)
        ours = vitkit.create_model(name, depth=1)
        assert vitkit.resolve_data_config(ours) == timm_resolve({}, model=ref), name
        assert vitkit.resolve_data_config(name) == vitkit.resolve_data_config(ours)
        assert type(ours.get_classifier()) is type(ref.get_classifier())
        assert ours.default_cfg["architecture"] == name and ours.default_cfg["tag"] == ref.default_cfg["tag"]
    model = vitkit.create_model("vit_digits")
    assert model.get_classifier() is model.head and model.default_cfg["num_classes"] == 10
    model.reset_classifier(3)
    assert model.default_cfg["num_classes"] == 3 and model.get_classifier().out_features == 3
    bare = vitkit.VisionTransformer(vitkit.ViTConfig(img_size=64, patch_size=16, embed_dim=64, depth=1, num_heads=2))
    assert vitkit.resolve_data_config(bare)["input_size"] == (3, 64, 64)


def test_from_pretrained_takes_transformers_arguments(tmp_path):
    vitkit.save_pretrained(vitkit.create_model("vit_digits"), tmp_path / "m")
    model = vitkit.from_pretrained(tmp_path / "m", num_labels=3, torch_dtype="bfloat16")
    assert model.num_classes == 3 and model.head.weight.dtype == torch.bfloat16
    assert vitkit.from_pretrained(tmp_path / "m", torch_dtype=torch.float16).pos_embed.dtype == torch.float16
    assert vitkit.from_pretrained(tmp_path / "m", torch_dtype="auto").pos_embed.dtype == torch.float32
    with pytest.raises(vitkit.ConfigError, match="disagree"):
        vitkit.from_pretrained(tmp_path / "m", num_classes=4, num_labels=3)
    with pytest.raises(vitkit.ConfigError, match="not a floating-point torch dtype"):
        vitkit.from_pretrained(tmp_path / "m", torch_dtype="int8")


def test_hidden_states_and_attentions_match_transformers(transformers, tmp_path):
    ref = _hf(transformers, "ViTForImageClassification", "ViTConfig", num_labels=5,
              attn_implementation="eager").eval()
    model = vitkit.from_pretrained(_save(ref, tmp_path / "vit")).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        theirs = ref(pixel_values=x, output_hidden_states=True, output_attentions=True)
        ours = model(x, output_hidden_states=True, output_attentions=True)
        plain = model(x)
    assert isinstance(ours, ViTOutput) and isinstance(plain, torch.Tensor)  # the default return is untouched
    torch.testing.assert_close(ours.logits, theirs.logits, **TOL)
    torch.testing.assert_close(ours.logits, plain, **TOL)
    assert len(ours.hidden_states) == len(theirs.hidden_states) == 3
    for a, b in zip(theirs.hidden_states, ours.hidden_states):
        torch.testing.assert_close(b, a, **TOL)
    for a, b in zip(theirs.attentions, ours.attentions):
        torch.testing.assert_close(b, a, **TOL)
    only_hidden = model(x, output_hidden_states=True)
    assert only_hidden.attentions is None and len(only_hidden.hidden_states) == 3


def test_default_forward_still_exports():
    model = randomize(vitkit.create_model("vit_digits", depth=2)).eval()
    x = torch.randn(2, 3, 32, 32)
    exported = torch.export.export(model, (x,))
    torch.testing.assert_close(exported.module()(x), model(x), **TOL)
