"""One path each: initialisation (model, fresh heads, loader), pooling vocabulary, MAP attention weights."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import vitkit
from vitkit import VisionTransformer, ViTConfig
from vitkit.features import compute_features

TINY = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=5)


def _std(p: torch.Tensor) -> float:
    return float(p.detach().float().std())


@pytest.mark.parametrize("config", [
    dict(TINY), dict(TINY, global_pool="map", class_token=False, init_values=1e-3),
    dict(TINY, distilled=True, reg_tokens=2, no_embed_class=True),
])
def test_loader_initialises_missing_tensors_as_the_model_does(tmp_path, config):
    """A checkpoint holding one tensor, loaded with strict=False: every other tensor is drawn by the model's
    own init_parameters (deterministic ones identical to a fresh model's, random ones with its spread)."""
    cfg = ViTConfig(**config)
    keep = "patch_embed.proj.weight"
    saved = VisionTransformer(cfg).state_dict()[keep]
    save_file({keep: saved}, tmp_path / "one.safetensors")
    loaded = vitkit.weights.load_pretrained(tmp_path / "one.safetensors", config=cfg, strict=False)
    fresh = dict(VisionTransformer(cfg).named_parameters())
    assert set(loaded.load_report.newly_initialized) == set(fresh) - {keep}
    for name, p in loaded.named_parameters():
        if name == keep:
            torch.testing.assert_close(p.detach(), saved, rtol=0, atol=0)
        elif "norm" in name or name.endswith(("bias", "gamma")):
            torch.testing.assert_close(p.detach(), fresh[name].detach(), rtol=0, atol=0)
        elif p.numel() > 64:  # random draws: the same distribution as the model's own
            assert abs(_std(p) - _std(fresh[name])) <= 0.25 * _std(fresh[name]), name


def test_fresh_head_and_init_weights_share_one_definition():
    model = VisionTransformer(ViTConfig(**TINY))
    model.reset_classifier(7)
    assert torch.all(model.head.bias == 0)
    assert 0.01 < float(model.head.weight.std()) < 0.03  # trunc normal, std .02
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(3.0)
    model.init_weights()
    assert torch.all(model.norm.weight == 1) and torch.all(model.norm.bias == 0)
    assert float(model.cls_token.abs().max()) < 1e-4  # normal, std 1e-6


@pytest.mark.parametrize("mode", ["token", "avg", "none"])
def test_one_pooling_vocabulary_for_the_model_and_features(mode):
    model = VisionTransformer(ViTConfig(**TINY)).eval()
    x = torch.randn(2, 3, 32, 32)
    tokens = model.forward_features(x)
    with torch.no_grad():
        got = compute_features(model, x, pool=mode)
    torch.testing.assert_close(got, model.pool(tokens, mode))
    if mode != "none":
        assert got.shape == (2, 64)


def test_map_head_returns_its_attention_weights_and_the_same_pooled_output():
    model = VisionTransformer(ViTConfig(**TINY, global_pool="map", class_token=False)).eval()
    tokens = model.forward_features(torch.randn(2, 3, 32, 32))[:, model.num_prefix_tokens:]
    fused = model.attn_pool(tokens)
    pooled, weights = model.attn_pool(tokens, return_attn=True)
    torch.testing.assert_close(pooled, fused, rtol=1e-5, atol=1e-5)
    assert weights.shape == (2, 2, 1, 16)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 1))
    last = vitkit.last_layer_attention(model, torch.randn(1, 3, 32, 32))
    assert last.shape == (1, 4, 4)


def test_attention_functions_do_not_switch_a_training_model_to_eval():
    model = VisionTransformer(ViTConfig(**TINY)).train()
    x = torch.randn(1, 3, 32, 32)
    vitkit.attention_rollout(model, x)
    vitkit.last_layer_attention(model, x)
    assert all(m.training for m in model.modules() if isinstance(m, nn.Module))
