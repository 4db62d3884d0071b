"""Config validation, registry, forward variants and input-size handling of the core model."""

from __future__ import annotations

import pytest
import torch

import vitkit
from vitkit import ConfigError, InputSizeError, UnknownModelError, VisionTransformer, ViTConfig

SMALL = dict(img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=3, num_classes=5)


# ---------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("field,value,words", [
    ("global_pool", "mean", ["global_pool", "token, avg, map, none"]),
    ("act_layer", "gelu_fast", ["act_layer", "gelu_tanh"]),
    ("norm_layer", "batchnorm", ["norm_layer", "layernorm"]),
    ("num_heads", 5, ["num_heads", "divisor of embed_dim=48"]),
    ("img_size", 30, ["img_size", "multiple of patch_size 8", "32"]),
    ("drop_path_rate", 1.5, ["drop_path_rate", "[0, 1)"]),
    ("depth", 0, ["depth", "positive integer"]),
    ("qk_scale", -1.0, ["qk_scale"]),
])
def test_bad_config_names_field_and_allowed_values(field, value, words):
    with pytest.raises(ConfigError) as err:
        ViTConfig(**{**SMALL, field: value})
    for word in words:
        assert word in str(err.value)


def test_token_pool_needs_class_token_and_distilled_needs_token_pool():
    with pytest.raises(ConfigError, match="class_token=False"):
        ViTConfig(**SMALL, class_token=False)
    with pytest.raises(ConfigError, match="distilled=True"):
        ViTConfig(**SMALL, distilled=True, global_pool="avg")
    with pytest.raises(ConfigError, match="class_token=False"):
        ViTConfig(**SMALL, class_token=False, global_pool="token_avg")
    with pytest.raises(ConfigError, match="two side by side"):
        ViTConfig(**SMALL, global_pool="token_avg", representation_size=16)
    model = VisionTransformer(ViTConfig(**SMALL, global_pool="token_avg"))
    tokens = torch.randn(2, 17, SMALL["embed_dim"])
    assert model.head.in_features == 2 * SMALL["embed_dim"] and torch.equal(
        model.pool(tokens), torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], -1))


def test_config_roundtrips_through_dict_and_json():
    cfg = ViTConfig(**{**SMALL, "img_size": (32, 48)}, reg_tokens=2, init_values=1e-5)
    again = ViTConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert again.img_size == (32, 48)
    with pytest.raises(ConfigError, match="Unknown ViTConfig field"):
        ViTConfig.from_dict({**cfg.to_dict(), "embed_dims": 3})
    with pytest.raises(ConfigError, match="did you mean 'embed_dim'"):
        cfg.replace(embed_dims=3)


def test_misspelt_choice_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'gelu_tanh'"):
        ViTConfig(act_layer="gelu_tan")


# ---------------------------------------------------------------------------------------------- registry
@pytest.mark.parametrize("name", vitkit.list_models())
def test_registry_entry_builds_on_meta_with_published_param_count(name):
    model = vitkit.create_model(name, device="meta")
    count = sum(p.numel() for p in model.parameters())
    entry = vitkit.get_entry(name)
    assert next(model.parameters()).device.type == "meta"
    if "small" in entry.tags:  # vitkit's own small configs have no published count
        assert entry.num_params is None
    else:
        assert count == entry.num_params, f"{name}: {count:,} != published {entry.num_params:,}"
    assert model.pretrained_cfg.input_size == (model.config.in_chans, *model.config.img_size)


def _timm_named_entries() -> list:
    """Registry names with a timm twin; the default run takes the first of each architecture prefix (the name
    up to its patch size), ``-m slow`` all of them."""
    seen, params = set(), []
    for name in vitkit.list_models():
        if vitkit.get_entry(name).pretrained_cfg.timm_name is None:
            continue
        prefix = name.split("_patch")[0]
        params.append(pytest.param(name, marks=[pytest.mark.slow] if prefix in seen else []))
        seen.add(prefix)
    return params


@pytest.mark.parametrize("name", _timm_named_entries())
def test_registry_counts_equal_timm_models(timm, name):
    entry = vitkit.get_entry(name)
    with torch.device("meta"):
        ref = timm.create_model(entry.pretrained_cfg.timm_name)
    assert sum(p.numel() for p in ref.parameters()) == entry.num_params, name


def test_in21k_counts_equal_transformers_vit_with_pooler_plus_head(transformers):
    cfg = transformers.ViTConfig()  # ViT-B/16 defaults
    with torch.device("meta"):
        ref = transformers.ViTModel(cfg, add_pooling_layer=True)
    head = 768 * 21843 + 21843
    assert sum(p.numel() for p in ref.parameters()) + head == vitkit.get_entry("vit_base_patch16_224_in21k").num_params


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownModelError) as err:
        vitkit.create_model("vit_base_patch16_244")
    assert "vit_base_patch16_224" in str(err.value)
    assert "list_models" in str(err.value)


def test_list_models_filters_by_pattern():
    names = vitkit.list_models("deit_*distilled*")
    assert names == sorted(names)
    assert {"deit_tiny_distilled_patch16_224", "deit_base_distilled_patch16_224"} <= set(names)
    assert all("distilled" in n for n in names)


def test_registry_preprocessing_defaults():
    deit = vitkit.get_entry("deit_base_patch16_224").pretrained_cfg
    assert deit.mean == (0.485, 0.456, 0.406) and deit.crop_pct == 0.875
    vit384 = vitkit.create_model("vit_base_patch16_384", device="meta").pretrained_cfg
    assert vit384.input_size == (3, 384, 384) and vit384.crop_pct == 1.0
    siglip = vitkit.create_model("vit_base_patch16_siglip_224", device="meta")
    assert siglip.config.act_layer == "gelu_tanh" and siglip.attn_pool is not None


def test_create_model_overrides():
    model = vitkit.create_model("vit_tiny_patch16_224", num_classes=3, img_size=64, depth=2)
    assert model.config.num_classes == 3 and model.config.img_size == (64, 64) and len(model.blocks) == 2
    assert model.pretrained_cfg.input_size == (3, 64, 64)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)


# ---------------------------------------------------------------------------------------------- forward
def test_shapes_along_the_way():
    model = VisionTransformer(ViTConfig(**SMALL)).eval()
    x = torch.randn(2, 3, 32, 32)
    assert model.patch_embed(x).shape == (2, 48, 4, 4)
    assert model.embed(x).shape == (2, 17, 48)
    assert model.forward_features(x).shape == (2, 17, 48)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 48)
    assert model(x).shape == (2, 5)


def test_forward_intermediates_equal_block_outputs():
    model = VisionTransformer(ViTConfig(**SMALL, reg_tokens=2)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = model.embed(x)
        outs = []
        for block in model.blocks:
            tokens = block(tokens)
            outs.append(tokens)
        final, inter = model.forward_intermediates(x, indices=2, output_fmt="NLC")
        assert torch.equal(final, model.forward_features(x))
        assert len(inter) == 2
        for got, want in zip(inter, outs[1:]):
            torch.testing.assert_close(got, want[:, 3:], rtol=0, atol=1e-6)
        maps = model.forward_intermediates(x, indices=[0], norm=True, intermediates_only=True)
        assert maps[0].shape == (2, 48, 4, 4)
        want = model.norm(outs[0])[:, 3:].reshape(2, 4, 4, 48).permute(0, 3, 1, 2)
        torch.testing.assert_close(maps[0], want, rtol=0, atol=1e-6)


def test_forward_intermediates_bad_arguments():
    model = VisionTransformer(ViTConfig(**SMALL))
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(ConfigError, match="out of range"):
        model.forward_intermediates(x, indices=[5])
    with pytest.raises(ConfigError, match="last 9 blocks"):
        model.forward_intermediates(x, indices=9)
    with pytest.raises(ConfigError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NHWC")


def test_other_input_sizes_run_and_bad_sizes_fail_clearly():
    model = VisionTransformer(ViTConfig(**SMALL)).eval()
    assert model(torch.randn(1, 3, 64, 40)).shape == (1, 5)
    with pytest.raises(InputSizeError) as err:
        model(torch.randn(1, 3, 30, 32))
    assert "30x32" in str(err.value) and "multiple of the patch size 8x8" in str(err.value)
    with pytest.raises(InputSizeError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(InputSizeError, match="3 channels"):
        model(torch.randn(1, 1, 32, 32))


def test_uint8_pixels_get_a_clear_error_and_predict_takes_tensors():
    model = vitkit.create_model("vit_digits", depth=1).eval()  # with the preprocessing of its pretrained cfg
    pixels = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with pytest.raises(InputSizeError, match="got a uint8 tensor of shape \\(2, 3, 32, 32\\).*ImageProcessor"):
        model(pixels)  # torch's own error named the convolution's bias type
    processor = vitkit.ImageProcessor.from_model(model)
    as_images = vitkit.predict(pixels, model, top_k=2)  # uint8: 0-255 images, preprocessed
    with torch.no_grad():
        direct = model(processor([p.permute(1, 2, 0).numpy() for p in pixels])).softmax(-1).topk(2)
    assert [[p.index for p in r.top_k] for r in as_images] == direct.indices.tolist()
    inputs = torch.randn(2, 3, 32, 32)  # float: the model's input as it is
    ran = vitkit.predict(inputs, model, top_k=1)
    with torch.no_grad():
        assert [r.top_k[0].index for r in ran] == model(inputs).argmax(-1).tolist()


def test_attention_weights_path_matches_fused_path():
    model = VisionTransformer(ViTConfig(**SMALL)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        maps = model.forward_attention(x)
        tokens = model.embed(x)
        for block in model.blocks:
            explicit, _ = block(tokens, return_attn=True)
            tokens = block(tokens)
            torch.testing.assert_close(explicit, tokens, rtol=0, atol=1e-5)
    assert len(maps) == 3 and maps[0].shape == (2, 3, 17, 17)
    torch.testing.assert_close(maps[-1].sum(-1), torch.ones(2, 3, 17))


def test_distilled_returns_both_heads_in_training_and_mean_in_eval():
    model = VisionTransformer(ViTConfig(**SMALL, distilled=True))
    x = torch.randn(2, 3, 32, 32)
    model.train()
    cls, dist = model(x)
    model.eval()
    with torch.no_grad():
        out = model(x)
        tokens = model.forward_features(x)
        torch.testing.assert_close(out, (model.head(tokens[:, 0]) + model.head_dist(tokens[:, 1])) / 2)
    assert cls.shape == dist.shape == out.shape == (2, 5)


def test_reset_classifier():
    model = VisionTransformer(ViTConfig(**SMALL, distilled=True)).eval()
    model.reset_classifier(11)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 11)
    assert model.head_dist.out_features == 11 and model.config.num_classes == 11
    model.reset_classifier(0)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 48)


def test_drop_path_rates_grow_linearly_and_dropout_only_in_training():
    model = VisionTransformer(ViTConfig(**SMALL, drop_path_rate=0.2, drop_rate=0.1))
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for b in model.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2])
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    model = VisionTransformer(ViTConfig(**SMALL))
    x = torch.randn(2, 3, 32, 32)
    model(x).sum().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for a, p in zip(plain, model.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-5, atol=1e-6)


def test_no_weight_decay_names():
    model = VisionTransformer(ViTConfig(**SMALL, global_pool="map", class_token=False, reg_tokens=1))
    assert model.no_weight_decay() == {"pos_embed", "reg_token", "attn_pool.latent"}


def test_reset_classifier_pooling_switch():
    model = VisionTransformer(ViTConfig(**SMALL)).eval()
    model.reset_classifier(4, global_pool="avg")
    assert model.config.global_pool == "avg" and model(torch.randn(1, 3, 32, 32)).shape == (1, 4)
    with pytest.raises(ConfigError, match="global_pool='map'"):
        model.reset_classifier(4, global_pool="map")


def test_reset_classifier_pooling_switch_keeps_a_config_that_rebuilds_the_model():
    model = VisionTransformer(ViTConfig(**SMALL))  # token pooling: final norm, no fc_norm
    model.reset_classifier(4, global_pool="avg")
    rebuilt = VisionTransformer(model.config)
    rebuilt.load_state_dict(model.state_dict())  # strict: the same modules, the same shapes
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(rebuilt.eval()(x), model.eval()(x), atol=0, rtol=0)


def test_label_names_follow_the_head():
    assert vitkit.create_model("vit_tiny_patch16_224", device="meta").pretrained_cfg.label_names == "imagenet-1k"
    assert vitkit.create_model("vit_tiny_patch16_224", num_classes=10, device="meta").pretrained_cfg.label_names is None


def test_siglip_preprocessing_squashes_without_crop():
    from vitkit import ImageProcessor

    siglip = vitkit.create_model("vit_base_patch16_siglip_224", device="meta")
    assert siglip.pretrained_cfg.crop_mode == "squash"
    assert ImageProcessor.from_model(siglip).resize_mode == "fixed"
    tiny = vitkit.create_model("vit_tiny_patch16_224", device="meta")
    assert ImageProcessor.from_model(tiny).resize_mode == "shorter"
