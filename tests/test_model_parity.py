"""vitkit's VisionTransformer against timm's, with the same random weights (timm state dict, strict load).

Tolerance: fp32 max abs difference <= 1e-5 on logits and features.
"""

from __future__ import annotations

import pytest
import torch

from vitkit import VisionTransformer, ViTConfig

ATOL = 1e-5

BASE = dict(img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=3, num_classes=7)

# name -> (vitkit config fields, extra timm kwargs that vitkit spells differently)
CASES = {
    "cls_token": ({}, {}),
    "avg_pool_fc_norm": (dict(global_pool="avg"), {}),
    "map_head_siglip": (dict(global_pool="map", class_token=False, act_layer="gelu_tanh"), {}),
    "no_class_token_avg": (dict(class_token=False, global_pool="avg"), {}),
    "registers_no_embed_class": (dict(reg_tokens=4, no_embed_class=True), {}),
    "registers_embed_class": (dict(reg_tokens=2), {}),
    "layer_scale": (dict(init_values=0.1), {}),
    "qk_norm": (dict(qk_norm=True), {}),
    "pre_norm_clip": (dict(pre_norm=True, act_layer="quick_gelu", norm_eps=1e-5), {}),
    "no_qkv_bias": (dict(qkv_bias=False), {}),
    "mlp_ratio_3": (dict(mlp_ratio=3.0), {}),
    "no_final_norm": (dict(final_norm=False), {}),
    "rmsnorm": (dict(norm_layer="rmsnorm"), {}),
    "rect_image": (dict(img_size=(32, 48)), {}),
    "in_chans_1": (dict(in_chans=1), {}),
    "head_0": (dict(num_classes=0), {}),
}


def timm_kwargs(cfg: ViTConfig) -> dict:
    """The timm VisionTransformer keyword arguments for a vitkit config (test-side translation)."""
    from functools import partial

    import torch.nn as nn

    norm = {"layernorm": partial(nn.LayerNorm, eps=cfg.norm_eps)}.get(cfg.norm_layer)
    if cfg.norm_layer == "rmsnorm":
        norm = partial(nn.RMSNorm, eps=cfg.norm_eps)
    return dict(
        img_size=cfg.img_size, patch_size=cfg.patch_size, in_chans=cfg.in_chans, num_classes=cfg.num_classes,
        embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio,
        qkv_bias=cfg.qkv_bias, qk_norm=cfg.qk_norm, init_values=cfg.init_values, class_token=cfg.class_token,
        no_embed_class=cfg.no_embed_class, reg_tokens=cfg.reg_tokens, pre_norm=cfg.pre_norm,
        final_norm=cfg.final_norm, fc_norm=cfg.fc_norm,
        global_pool="" if cfg.global_pool == "none" else cfg.global_pool,
        act_layer=cfg.act_layer, norm_layer=norm,
    )


def build_pair(timm, cfg: ViTConfig, **extra):
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    ref = TimmViT(**timm_kwargs(cfg), **extra).eval()
    ours = VisionTransformer(cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def assert_close(a: torch.Tensor, b: torch.Tensor, atol: float = ATOL) -> None:
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = (a - b).abs().max().item()
    assert diff <= atol, f"max abs diff {diff:.3g} > {atol}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_timm(timm, case):
    fields, extra = CASES[case]
    cfg = ViTConfig(**{**BASE, **fields})
    ref, ours = build_pair(timm, cfg, **extra)
    x = torch.randn(2, cfg.in_chans, *cfg.img_size)
    with torch.no_grad():
        assert_close(ours.forward_features(x), ref.forward_features(x))
        assert_close(ours(x), ref(x))
        assert_close(ours.forward_head(ours.forward_features(x), pre_logits=True),
                     ref.forward_head(ref.forward_features(x), pre_logits=True))


def test_distilled_matches_timm_deit(timm):
    from timm.models.deit import VisionTransformerDistilled

    cfg = ViTConfig(**BASE, distilled=True)
    kwargs = timm_kwargs(cfg)
    ref = VisionTransformerDistilled(**kwargs).eval()
    ours = VisionTransformer(cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert_close(ours(x), ref(x))
        assert_close(ours.forward_features(x), ref.forward_features(x))
    # training mode: both heads are returned (timm does so in its distilled-training mode)
    ours.train()
    ref.train()
    ref.set_distilled_training(True)
    with torch.no_grad():
        cls, dist = ours(x)
        ref_cls, ref_dist = ref(x)
    assert_close(cls, ref_cls)
    assert_close(dist, ref_dist)


def test_qk_scale_matches_timm_with_same_scale(timm):
    """timm dropped qk_scale; its explicit path reads ``attn.scale``, so set it there to compare."""
    cfg = ViTConfig(**BASE, qk_scale=0.05)
    ref, ours = build_pair(timm, ViTConfig(**BASE))
    ours = VisionTransformer(cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    for block in ref.blocks:
        block.attn.fused_attn = False
        block.attn.scale = 0.05
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert_close(ours(x), ref(x))
        default = VisionTransformer(ViTConfig(**BASE)).eval()
        default.load_state_dict(ref.state_dict())
        assert (default(x) - ours(x)).abs().max() > 1e-3  # the scale really changes the output


def test_representation_size_is_timm_features_then_dense_tanh(timm):
    """timm removed the pre-logits layer; reference = timm's pooled features -> Linear -> tanh -> head."""
    cfg = ViTConfig(**BASE, representation_size=20)
    features_only = ViTConfig(**{**BASE, "num_classes": 0})
    ref = timm.models.vision_transformer.VisionTransformer(**timm_kwargs(features_only)).eval()
    ours = VisionTransformer(cfg).eval()
    fc, head = torch.nn.Linear(48, 20), torch.nn.Linear(20, 7)
    state = {**ref.state_dict(), "pre_logits.fc.weight": fc.weight, "pre_logits.fc.bias": fc.bias,
             "head.weight": head.weight, "head.bias": head.bias}
    ours.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        pooled = ref(x)
        assert_close(ours.forward_head(ours.forward_features(x), pre_logits=True), torch.tanh(fc(pooled)))
        assert_close(ours(x), head(torch.tanh(fc(pooled))))


@pytest.mark.parametrize("case", ["cls_token", "registers_no_embed_class", "map_head_siglip"])
def test_other_input_size_matches_timm_dynamic(timm, case):
    """At an input size other than the config's, positions are resampled as timm's dynamic_img_size does."""
    cfg = ViTConfig(**{**BASE, **CASES[case][0]})
    ref, ours = build_pair(timm, cfg, dynamic_img_size=True)
    x = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        assert_close(ours(x), ref(x))


def test_forward_intermediates_match_timm(timm):
    cfg = ViTConfig(**BASE, reg_tokens=1)
    ref, ours = build_pair(timm, cfg)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        final, inter = ours.forward_intermediates(x, indices=[0, -1], norm=True, return_prefix_tokens=True)
        ref_final, ref_inter = ref.forward_intermediates(x, indices=[0, 2], norm=True, return_prefix_tokens=True)
    assert_close(final, ref_final)
    for (spatial, prefix), (ref_spatial, ref_prefix) in zip(inter, ref_inter):
        assert spatial.shape == (2, 48, 4, 4)
        assert prefix.shape == (2, 2, 48)
        assert_close(spatial, ref_spatial)
        assert_close(prefix, ref_prefix)


def test_state_dict_keys_equal_timm_for_registry_models(timm):
    import vitkit

    for name in ["vit_base_patch16_224", "deit_small_distilled_patch16_224", "vit_base_patch16_siglip_224",
                 "vit_small_patch14_reg4_dinov2"]:
        ours = vitkit.create_model(name, device="meta")
        kwargs = {"act_layer": "gelu_tanh"} if "siglip" in name else {}
        with torch.device("meta"):
            ref = timm.create_model(name, **kwargs)
        ours_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
        ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
        assert ours_shapes == ref_shapes, name
