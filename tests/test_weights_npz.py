"""Google .npz checkpoints (original vision_transformer and big_vision layouts): parity with timm, when timm's
numerics are asked for (``TIMM``: exact GELU, timm's npz resampling). By default a Google file runs with
Google's own numerics; tests/test_google_parity.py compares those with Google's Flax code."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vitkit
from test_weights_refs import TOL, google_arrays, images, max_diff, timm_from_npz, timm_vit, write_google_npz
from vitkit.errors import CheckpointError

TIMM = dict(act_layer="gelu", posemb_resample="timm")  # how timm runs a Google file


@pytest.mark.parametrize("layout, prefix", [
    (dict(), ""), (dict(big_vision=True), "params/"), (dict(scanned=True), ""), (dict(), "opt/target/"),
], ids=["original", "big_vision-params", "scanned", "opt-target"])
def test_npz_layouts_match_timm(timm, tmp_path, layout, prefix):
    ref = timm_vit(timm)
    path = write_google_npz(ref, tmp_path / "ViT-T.npz", prefix=prefix, **layout)
    model = vitkit.from_pretrained(path, **TIMM)
    assert model.load_report.format == "npz" and model.load_report.ok
    x = images()
    assert max_diff(model(x), ref(x)) <= TOL
    assert max_diff(model.forward_features(x), ref.forward_features(x)) <= TOL


def test_big_vision_siglip_map_head_with_text_tower(timm, tmp_path):
    ref = timm_vit(timm, class_token=False, global_pool="map", num_classes=0)
    arrays = {f"params/img/{k}": v for k, v in google_arrays(ref, big_vision=True).items()}
    arrays.update({"params/txt/Encoder_0/encoder_norm/scale": np.ones(4, np.float32),
                   "params/t": np.ones(1, np.float32), "params/b": np.zeros(1, np.float32)})
    np.savez(tmp_path / "siglip.npz", **arrays)
    model = vitkit.from_pretrained(tmp_path / "siglip.npz", **TIMM)
    assert model.config.global_pool == "map" and not model.config.class_token
    assert "txt/Encoder_0/encoder_norm/scale" in model.load_report.dropped
    x = images()
    assert max_diff(model(x), ref(x)) <= TOL


def test_big_vision_gap_pooling(timm, tmp_path):
    ref = timm_vit(timm, class_token=False, global_pool="avg", fc_norm=False)
    model = vitkit.from_pretrained(write_google_npz(ref, tmp_path / "gap.npz", big_vision=True), **TIMM)
    assert model.config.global_pool == "avg" and model.config.fc_norm is False
    x = images()
    assert max_diff(model(x), ref(x)) <= TOL


def test_big_vision_class_token_posemb_skips_it(timm, tmp_path):
    """big_vision adds position embeddings before joining the class token: vitkit's no_embed_class."""
    ref = timm_vit(timm, no_embed_class=True)
    model = vitkit.from_pretrained(write_google_npz(ref, tmp_path / "tok.npz", big_vision=True), **TIMM)
    assert model.config.no_embed_class
    x = images()
    assert max_diff(model(x), ref(x)) <= TOL


def test_resampled_posemb_matches_timm_npz_loader(timm, tmp_path):
    """384->224 style: a 6x6 grid loaded at 4x4 with timm's npz numerics (bilinear, no antialias)."""
    ref = timm_vit(timm, img_size=48)
    path = write_google_npz(ref, tmp_path / "w48.npz")
    model = vitkit.from_pretrained(path, img_size=32, **TIMM)
    timm_model = timm_from_npz(timm, path, img_size=32)
    assert model.pos_embed.shape == timm_model.pos_embed.shape == (1, 17, 128)
    assert any("bilinear" in note for note in model.load_report.adapted)
    x = images()
    assert max_diff(model(x), timm_model(x)) <= TOL


def test_in_chans_and_patch_size_adapted_like_timm(timm, tmp_path):
    ref = timm_vit(timm)
    path = write_google_npz(ref, tmp_path / "w.npz")
    model = vitkit.from_pretrained(path, in_chans=1, patch_size=4, **TIMM)
    timm_model = timm_from_npz(timm, path, in_chans=1, patch_size=4)
    x = images(chans=1)
    assert max_diff(model(x), timm_model(x)) <= TOL


def test_pre_logits_kept_or_dropped(timm, tmp_path):
    ref = timm_vit(timm)
    arrays = google_arrays(ref)
    gen = np.random.default_rng(0)
    arrays["pre_logits/kernel"] = gen.normal(size=(128, 96)).astype(np.float32) * 0.1
    arrays["pre_logits/bias"] = gen.normal(size=(96,)).astype(np.float32) * 0.1
    arrays["head/kernel"] = gen.normal(size=(96, 5)).astype(np.float32) * 0.1
    np.savez(tmp_path / "in21k.npz", **arrays)

    model = vitkit.from_pretrained(tmp_path / "in21k.npz", **TIMM)
    assert model.config.representation_size == 96
    x = images()
    want = torch.tanh(ref.forward_head(ref.forward_features(x), pre_logits=True) @ torch.from_numpy(
        arrays["pre_logits/kernel"]) + torch.from_numpy(arrays["pre_logits/bias"]))
    assert max_diff(model.forward_head(model.forward_features(x), pre_logits=True), want) <= TOL

    dropped = vitkit.from_pretrained(tmp_path / "in21k.npz", representation_size=None, num_classes=7, **TIMM)
    assert dropped.config.representation_size is None
    assert {"pre_logits.fc.weight", "pre_logits.fc.bias"} <= set(dropped.load_report.dropped)
    assert dropped.load_report.newly_initialized == ["head.weight", "head.bias"]


def test_create_model_with_npz(timm, tmp_path):
    vitkit.register(vitkit.ModelEntry(name="test_weights_npz_tiny", config=dict(
        img_size=32, patch_size=8, embed_dim=128, depth=2, num_heads=2, num_classes=5),
        pretrained_cfg=vitkit.PretrainedCfg(input_size=(3, 32, 32), num_classes=5)))
    ref = timm_vit(timm)
    model = vitkit.create_model("test_weights_npz_tiny", pretrained=write_google_npz(ref, tmp_path / "w.npz"),
                                **TIMM)
    assert model.model_name == "test_weights_npz_tiny"
    x = images()
    assert max_diff(model(x), ref(x)) <= TOL


# ---------------------------------------------------------------------- writing npz
@pytest.mark.parametrize("kwargs", [dict(), dict(class_token=False, global_pool="map", num_classes=0),
                                    dict(no_embed_class=True)], ids=["vit", "map", "no_embed_class"])
def test_npz_writer_round_trips_through_timm(timm, tmp_path, kwargs):
    ref = timm_vit(timm, **kwargs)
    model = vitkit.VisionTransformer(vitkit.ViTConfig(**{**dict(img_size=32, patch_size=8, embed_dim=128, depth=2,
                                                                 num_heads=2, num_classes=5), **kwargs}))
    model.load_state_dict(ref.state_dict())
    path = vitkit.save_pretrained(model, tmp_path / "out.npz", format="npz")
    timm_model = timm_from_npz(timm, path, **kwargs)
    x = images()
    assert max_diff(timm_model(x), ref(x)) <= TOL
    again = vitkit.from_pretrained(path, **TIMM)
    assert max_diff(again(x), ref(x)) <= TOL


def test_npz_writer_refuses_what_npz_cannot_hold(tmp_path):
    model = vitkit.VisionTransformer(vitkit.ViTConfig(img_size=32, patch_size=8, embed_dim=64, depth=1, num_heads=1,
                                                      distilled=True))
    with pytest.raises(CheckpointError, match="dist_token"):
        vitkit.save_pretrained(model, tmp_path / "deit.npz", format="npz")
    # a rotary model whose tensors would all find a place (q, k, v biases) is still refused, by its positions
    dinov3 = vitkit.create_model("vit_small_patch16_dinov3", depth=1, embed_dim=64, num_heads=1, qkv_bias=True)
    with pytest.raises(CheckpointError, match="rotary position embeddings \\(rope='dinov3'\\)"):
        vitkit.save_pretrained(dinov3, tmp_path / "dinov3.npz", format="npz")
    assert not (tmp_path / "dinov3.npz").exists()


# ---------------------------------------------------------------------- Google's numerics (the default)
def test_google_numerics_by_default_and_timm_on_request(timm, tmp_path):
    vitkit.register(vitkit.ModelEntry(name="test_npz_numerics", config=dict(
        img_size=32, patch_size=8, embed_dim=128, depth=2, num_heads=2, num_classes=5),
        pretrained_cfg=vitkit.PretrainedCfg(input_size=(3, 32, 32), num_classes=5)))
    path = write_google_npz(timm_vit(timm), tmp_path / "w.npz")
    for model in (vitkit.from_pretrained(path), vitkit.create_model("test_npz_numerics", pretrained=path)):
        assert model.config.act_layer == "gelu_tanh" and model.config.posemb_resample == "google"
        assert "as Google's Flax code runs this file" in model.load_report.numerics
        assert model.load_report.numerics in model.load_report.summary()
    for model in (vitkit.from_pretrained(path, **TIMM), vitkit.create_model("test_npz_numerics", pretrained=path,
                                                                            **TIMM)):
        assert model.config.act_layer == "gelu" and model.config.posemb_resample == "timm"
        assert "not Google's Flax code's (act_layer='gelu_tanh', posemb_resample='google')" in \
            model.load_report.numerics


@pytest.mark.parametrize("old, new", [((24, 24), (14, 14)), ((7, 5), (3, 9)), ((4, 4), (9, 9))])
def test_google_resize_is_scipy_zoom_order_1(old, new):
    """Google's loaders resize with scipy.ndimage.zoom(order=1): bilinear with the corners aligned."""
    import scipy.ndimage

    grid = np.random.default_rng(0).normal(size=(*old, 6)).astype(np.float32)
    zoom = (new[0] / old[0], new[1] / old[1], 1)
    want = scipy.ndimage.zoom(grid.astype(np.float64), zoom, order=1)
    assert want.shape[:2] == new
    posemb = torch.from_numpy(grid).reshape(1, -1, 6)
    got = vitkit.posemb.resample_posemb(posemb, new, num_prefix_tokens=0, old_grid=old, style="google")
    # torch interpolates in float32 (as timm does), scipy in float64: ~5e-6 on values of ~3 measured
    assert max_diff(got.reshape(*new, 6).double(), torch.from_numpy(want)) <= 1e-5
    timm_style = vitkit.posemb.resample_posemb(posemb, new, num_prefix_tokens=0, old_grid=old, style="timm_npz")
    assert max_diff(timm_style.reshape(*new, 6).double(), torch.from_numpy(want)) > 1e-2  # corners not aligned


def test_sincos2d_file_needs_posemb_and_says_so(timm, tmp_path):
    """A big_vision posemb='sincos2d' file has no position tensor: the error names that, not 'not a ViT'."""
    ref = timm_vit(timm, class_token=False, global_pool="avg", fc_norm=False)
    arrays = google_arrays(ref, big_vision=True)
    del arrays["pos_embedding"]
    np.savez(tmp_path / "sincos.npz", **arrays)
    with pytest.raises(CheckpointError, match=r"no position embedding tensor.*posemb='sincos2d'"):
        vitkit.from_pretrained(tmp_path / "sincos.npz")
    with pytest.raises(CheckpointError, match="Pass img_size"):
        vitkit.from_pretrained(tmp_path / "sincos.npz", posemb="sincos2d")
    model = vitkit.from_pretrained(tmp_path / "sincos.npz", posemb="sincos2d", img_size=32)
    assert model.load_report.ok and model.config.posemb == "sincos2d"
    assert "pos_embed" not in model.state_dict()
    x = images()
    with torch.no_grad():  # the same model with the sin-cos table as a learned tensor gives the same outputs
        ref.pos_embed.copy_(vitkit.posemb.posemb_sincos_2d((4, 4), 128))
        assert max_diff(model(x), vitkit.from_pretrained(write_google_npz(ref, tmp_path / "learn.npz",
                                                                           big_vision=True))(x)) <= TOL


def test_bf16_npz_arrays_load(timm, tmp_path):
    """big_vision writes bf16 arrays as raw 2-byte records (|V2): upcast to fp32, or kept with dtype=bf16."""
    ref = timm_vit(timm)
    arrays = google_arrays(ref)
    raw = {k: (v.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).view("V2") for k, v in arrays.items()}
    np.savez(tmp_path / "bf16.npz", **raw)
    fp32 = vitkit.from_pretrained(tmp_path / "bf16.npz")
    rounded = {k: (v.astype(np.uint32) << 16).view(np.float32) for k, v in
               ((k, r.view(np.uint16)) for k, r in raw.items())}
    np.savez(tmp_path / "rounded.npz", **rounded)
    same = vitkit.from_pretrained(tmp_path / "rounded.npz")
    assert fp32.pos_embed.dtype == torch.float32
    x = images()
    assert max_diff(fp32(x), same(x)) == 0.0
    kept = vitkit.from_pretrained(tmp_path / "bf16.npz", dtype=torch.bfloat16)
    assert kept.pos_embed.dtype == torch.bfloat16
    assert "bfloat16" in vitkit.weights.inventory(tmp_path / "bf16.npz").dtypes()


def test_sincos2d_models_round_trip_through_npz_and_vitkit_only(tmp_path):
    model = vitkit.VisionTransformer(vitkit.ViTConfig(img_size=32, patch_size=8, embed_dim=64, depth=1, num_heads=2,
                                                      num_classes=3, posemb="sincos2d", class_token=False,
                                                      global_pool="avg", fc_norm=False)).eval()
    x = images()
    for fmt, load in (("vitkit", {}), ("npz", dict(posemb="sincos2d", img_size=32, act_layer="gelu"))):
        again = vitkit.from_pretrained(vitkit.save_pretrained(model, tmp_path / f"m.{fmt}", format=fmt), **load)
        assert again.config.posemb == "sincos2d" and max_diff(again(x), model(x)) <= TOL
    for fmt in ("timm", "hf"):
        with pytest.raises(CheckpointError, match="sin-cos"):
            vitkit.save_pretrained(model, tmp_path / fmt, format=fmt)
