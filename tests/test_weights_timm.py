"""timm checkpoints (.safetensors, .pth): parity with timm, adaptation with timm's numerics, strictness."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import save_file

import vitkit
from test_weights_refs import TINY, TOL, images, max_diff, timm_from_file, timm_vit
from vitkit.errors import CheckpointError

VARIANTS = {
    "cls": dict(),
    "avg_fc_norm": dict(global_pool="avg"),
    "dinov2_reg": dict(reg_tokens=4, no_embed_class=True, init_values=1e-5, num_classes=0),
    "map": dict(class_token=False, global_pool="map", num_classes=0),
    "qk_norm_no_bias": dict(qk_norm=True, qkv_bias=False),
    "pre_norm": dict(pre_norm=True),
}


def _register_tiny(name: str, **config) -> str:
    vitkit.register(vitkit.ModelEntry(name=name, config={**TINY, **config},
                                      pretrained_cfg=vitkit.PretrainedCfg(input_size=(3, 32, 32), num_classes=5)))
    return name


@pytest.fixture
def ckpt(timm, tmp_path):
    ref = timm_vit(timm)
    path = tmp_path / "model.safetensors"
    save_file(ref.state_dict(), path)
    return ref, path


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_timm_variants_rebuild_and_match(timm, tmp_path, variant):
    ref = timm_vit(timm, **VARIANTS[variant])
    save_file(ref.state_dict(), tmp_path / "w.safetensors")
    model = vitkit.from_pretrained(tmp_path / "w.safetensors")
    assert model.load_report.ok and model.load_report.format == "timm"
    x = images()
    assert max_diff(model.forward_features(x), ref.forward_features(x)) <= TOL
    assert max_diff(model(x), ref(x)) <= TOL


def test_deit_distilled(timm, tmp_path):
    from timm.models.deit import VisionTransformerDistilled

    from test_weights_refs import randomize

    ref = randomize(VisionTransformerDistilled(**TINY))
    torch.save(ref.state_dict(), tmp_path / "deit.pth")
    model = vitkit.from_pretrained(tmp_path / "deit.pth")
    assert model.config.distilled
    x = images()
    assert max_diff(model(x), ref(x)) <= TOL


def test_pth_nested_training_checkpoint(ckpt, tmp_path):
    ref, _ = ckpt
    state = {f"module.{k}": v for k, v in ref.state_dict().items()}
    torch.save({"model": state, "epoch": 3, "args": {"lr": 0.1}}, tmp_path / "ckpt.pth")
    model = vitkit.from_pretrained(tmp_path / "ckpt.pth")
    x = images()
    assert max_diff(model(x), ref(x)) <= TOL


def test_create_model_loads_file(ckpt):
    ref, path = ckpt
    model = vitkit.create_model(_register_tiny("test_weights_timm_tiny"), pretrained=path)
    assert model.model_name == "test_weights_timm_tiny" and model.pretrained_cfg.input_size == (3, 32, 32)
    x = images()
    assert max_diff(model(x), ref(x)) <= TOL


def test_head_replaced_and_reported(ckpt, caplog):
    ref, path = ckpt
    with caplog.at_level(logging.WARNING, logger="vitkit"):
        model = vitkit.from_pretrained(path, num_classes=3)
    assert model.load_report.newly_initialized == ["head.weight", "head.bias"]
    assert "newly initialized: head.weight, head.bias" in caplog.text
    assert model.head.weight.shape == (3, 128) and not model.head.weight.is_meta
    assert max_diff(model.forward_features(images()), ref.forward_features(images())) <= TOL


def test_head_dropped_for_features(ckpt):
    ref, path = ckpt
    model = vitkit.from_pretrained(path, num_classes=0)
    assert model.load_report.dropped == ["head.bias", "head.weight"]
    x = images()
    assert max_diff(model(x), ref.forward_head(ref.forward_features(x), pre_logits=True)) <= TOL


def test_resampled_posemb_matches_timm(timm, ckpt):
    """timm's torch path: bicubic with antialias."""
    _, path = ckpt
    model = vitkit.from_pretrained(path, img_size=48)
    target = timm_from_file(timm, path, img_size=48)
    x = images(size=48)
    assert any("antialias" in n for n in model.load_report.adapted)
    assert max_diff(model(x), target(x)) <= TOL


def test_in_chans_patch_size_and_grid_match_timm_loader(timm, ckpt):
    _, path = ckpt
    kwargs = dict(in_chans=1, patch_size=4, num_classes=5)
    model = vitkit.from_pretrained(path, **kwargs)
    target = timm_from_file(timm, path, **kwargs)
    x = images(chans=1)
    assert max_diff(model(x), target(x)) <= TOL


def test_fp16_checkpoint_loads_as_fp32(ckpt, tmp_path):
    ref, _ = ckpt
    save_file({k: v.half() for k, v in ref.state_dict().items()}, tmp_path / "half.safetensors")
    model = vitkit.from_pretrained(tmp_path / "half.safetensors")
    assert model.pos_embed.dtype == torch.float32
    half = vitkit.from_pretrained(tmp_path / "half.safetensors", dtype=torch.float16)
    assert half.pos_embed.dtype == torch.float16


def test_wrong_architecture_is_a_table_not_a_traceback(ckpt):
    _, path = ckpt
    name = _register_tiny("test_weights_timm_wide", depth=3, embed_dim=192, num_heads=3)
    with pytest.raises(CheckpointError) as info:
        vitkit.create_model(name, pretrained=path)
    text = str(info.value)
    assert "missing (in the model, not in the checkpoint)" in text and "blocks.2.norm1.weight" in text
    assert "mis-shaped" in text and "(192, 3, 8, 8)" in text and "(128, 3, 8, 8)" in text
    assert "strict=False" in text


def test_not_strict_loads_what_fits(ckpt):
    _, path = ckpt
    model = vitkit.from_pretrained(path, depth=3, strict=False)
    assert "blocks.2.norm1.weight" in model.load_report.missing
    assert "blocks.2.norm1.weight" in model.load_report.newly_initialized
    assert not any(p.is_meta for p in model.parameters())
    assert torch.allclose(model.blocks[2].norm1.weight, torch.ones(128))
    assert torch.isfinite(model(images())).all()


def test_timm_writer_round_trips(timm, tmp_path, ckpt):
    ref, path = ckpt
    model = vitkit.from_pretrained(path)
    out = vitkit.save_pretrained(model, tmp_path / "export.safetensors", format="timm")
    target = timm_from_file(timm, out)
    folder = vitkit.save_pretrained(model, tmp_path / "timm_dir", format="timm")
    assert (folder / "config.json").is_file()
    again = vitkit.from_pretrained(folder)
    x = images()
    assert max_diff(target(x), ref(x)) <= TOL and max_diff(again(x), ref(x)) <= TOL


@pytest.mark.parametrize("name", ["vit_small_patch16_dinov3_qkvb", "vit_small_plus_patch16_dinov3",
                                  "eva02_tiny_patch14_224", "vit_pe_core_tiny_patch16_384"])
def test_rotary_models_written_for_timm_load_in_timms_eva_with_the_same_features(name, tmp_path):
    """DINOv3, EVA-02 and PE are timm's Eva class: the written folder's model_args are Eva's and the layer
    scales its gamma_1/gamma_2, so timm builds and loads the folder; reading it back gives the model again."""
    import json

    from _refs import require
    from _text_refs import redraw

    timm = require("timm")
    model = vitkit.create_model(name, depth=2).eval()
    redraw(model)
    out = vitkit.save_pretrained(model, tmp_path / "t", format="timm")
    cfg = json.loads((out / "config.json").read_text())
    ref = timm.create_model(cfg["architecture"], pretrained=True, **cfg["model_args"],
                            pretrained_cfg_overlay=dict(file=str(out / "model.safetensors"))).eval()
    back = vitkit.create_model(name, depth=2, pretrained=out).eval()
    x = torch.randn(2, 3, *model.config.img_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model.forward_features(x)
        assert (ref.forward_features(x) - want).abs().max() <= 1e-5
        assert (back.forward_features(x) - want).abs().max() == 0


def test_a_plain_vit_written_for_timm_keeps_vision_transformer_names_and_kwargs(tmp_path):
    import json

    from safetensors.torch import load_file

    model = vitkit.create_model("vit_small_patch16_224", depth=1, init_values=1e-5)  # layer scale: ls1.gamma in timm
    out = vitkit.save_pretrained(model, tmp_path / "t", format="timm")
    assert "blocks.0.ls1.gamma" in load_file(out / "model.safetensors")
    assert {"reg_tokens", "pre_norm", "fc_norm"} <= set(json.loads((out / "config.json").read_text())["model_args"])


@pytest.mark.parametrize("name", ["vit_small_plus_patch16_dinov3", "eva02_tiny_patch14_224",
                                  "vit_pe_core_tiny_patch16_384"])
def test_convert_to_timm_verifies_rotary_models(name, tmp_path, capsys):
    """The written timm folder, read on its own (its config.json names the architecture, whose rotary and MLP
    fields the shapes cannot tell), computes what the source does: convert --verify passes with no difference."""
    from vitkit.cli import main

    src = vitkit.save_pretrained(vitkit.create_model(name, depth=2), tmp_path / "src")
    assert main(["convert", str(src), str(tmp_path / "out"), "--to", "timm", "--verify"]) == 0
    assert "max |difference|: 0" in capsys.readouterr().out
