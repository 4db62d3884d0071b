"""Hugging Face transformers checkpoints (ViT, DeiT with teacher, SigLIP): parity both ways."""

from __future__ import annotations

import json

import pytest
import torch

import vitkit
from test_weights_refs import TOL, images, max_diff, randomize
from vitkit.errors import CheckpointError

SMALL = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256, image_size=32,
             patch_size=8)


def _hf(transformers, cls_name: str, config_name: str, **kwargs):
    config = getattr(transformers, config_name)(**{**SMALL, **kwargs})
    return randomize(getattr(transformers, cls_name)(config))


def _save(model, path):
    model.save_pretrained(path)
    return path


@torch.no_grad()
def _outputs(model, x, **kwargs):
    return model(pixel_values=x, **kwargs)


@pytest.mark.parametrize("pooler", [True, False])
def test_vit_model(transformers, tmp_path, pooler):
    ref = randomize(transformers.ViTModel(transformers.ViTConfig(**SMALL), add_pooling_layer=pooler))
    model = vitkit.from_pretrained(_save(ref, tmp_path / "vit"))
    assert model.config.norm_eps == 1e-12 and model.config.num_classes == 0
    assert model.config.representation_size == (128 if pooler else None)
    x = images()
    out = _outputs(ref, x)
    assert max_diff(model.forward_features(x), out.last_hidden_state) <= TOL
    if pooler:
        assert max_diff(model(x), out.pooler_output) <= TOL


def test_vit_for_image_classification(transformers, tmp_path):
    ref = _hf(transformers, "ViTForImageClassification", "ViTConfig", num_labels=7)
    model = vitkit.from_pretrained(_save(ref, tmp_path / "vitc"))
    x = images()
    assert max_diff(model(x), _outputs(ref, x).logits) <= TOL


def test_deit_with_teacher(transformers, tmp_path):
    ref = _hf(transformers, "DeiTForImageClassificationWithTeacher", "DeiTConfig", num_labels=7)
    model = vitkit.from_pretrained(_save(ref, tmp_path / "deit"))
    assert model.config.distilled
    x = images()
    assert max_diff(model(x), _outputs(ref, x).logits) <= TOL


def test_deit_model_features(transformers, tmp_path):
    ref = _hf(transformers, "DeiTModel", "DeiTConfig")
    model = vitkit.from_pretrained(_save(ref, tmp_path / "deitm"))
    x = images()
    assert max_diff(model.forward_features(x), _outputs(ref, x).last_hidden_state) <= TOL


def test_siglip_vision_model(transformers, tmp_path):
    ref = _hf(transformers, "SiglipVisionModel", "SiglipVisionConfig")
    model = vitkit.from_pretrained(_save(ref, tmp_path / "siglip"))
    assert model.config.act_layer == "gelu_tanh" and model.config.global_pool == "map"
    x = images()
    out = _outputs(ref, x)
    assert max_diff(model.forward_features(x), out.last_hidden_state) <= TOL
    assert max_diff(model(x), out.pooler_output) <= TOL


def test_full_siglip_model_loads_its_image_tower(transformers, tmp_path):
    text = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=99)
    config = transformers.SiglipConfig(text_config=text, vision_config=SMALL)
    ref = randomize(transformers.SiglipModel(config))
    model = vitkit.from_pretrained(_save(ref, tmp_path / "siglip_full"))
    assert any(k.startswith("text_model.") for k in model.load_report.dropped)
    x = images()
    assert max_diff(model(x), _outputs(ref.vision_model, x).pooler_output) <= TOL


@pytest.mark.parametrize("cls_name, config_name", [("ViTModel", "ViTConfig"),
                                                   ("SiglipVisionModel", "SiglipVisionConfig")])
def test_resampled_posemb_matches_interpolate_pos_encoding(transformers, tmp_path, cls_name, config_name):
    ref = _hf(transformers, cls_name, config_name)
    model = vitkit.from_pretrained(_save(ref, tmp_path / "m"), img_size=48)
    assert any("bicubic" in n and "antialias" not in n for n in model.load_report.adapted)
    x = images(size=48)
    want = _outputs(ref, x, interpolate_pos_encoding=True).last_hidden_state
    assert max_diff(model.forward_features(x), want) <= TOL
    native = vitkit.from_pretrained(tmp_path / "m")  # another input size at run time: the same numerics
    assert native.config.posemb_resample == "hf"
    assert max_diff(native.forward_features(x), want) <= TOL


def test_preprocessing_read_from_preprocessor_config(transformers, tmp_path):
    folder = _save(_hf(transformers, "ViTModel", "ViTConfig"), tmp_path / "vit")
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.1, 0.2, 0.3], "image_std": [0.4, 0.5, 0.6], "resample": 2,
         "size": {"height": 32, "width": 32}}))
    model = vitkit.from_pretrained(folder)
    assert model.pretrained_cfg.mean == (0.1, 0.2, 0.3) and model.pretrained_cfg.interpolation == "bilinear"


def test_hub_id_without_network_is_a_clear_error():
    with pytest.raises(CheckpointError, match="hf download vitkit-tests/no-such-model-anywhere"):
        vitkit.from_pretrained("hf-hub:vitkit-tests/no-such-model-anywhere")


def test_deit_without_teacher_is_refused(transformers, tmp_path):
    folder = _save(_hf(transformers, "DeiTForImageClassification", "DeiTConfig", num_labels=3), tmp_path / "d")
    with pytest.raises(CheckpointError, match="DeiTForImageClassification"):
        vitkit.from_pretrained(folder)


# ---------------------------------------------------------------------- writing for transformers
WRITE_CASES = {
    "ViTForImageClassification": dict(num_classes=7),
    "ViTModel": dict(num_classes=0, representation_size=128),
    "DeiTForImageClassificationWithTeacher": dict(num_classes=7, distilled=True),
    "SiglipVisionModel": dict(num_classes=0, class_token=False, global_pool="map", act_layer="gelu_tanh"),
}


@pytest.mark.parametrize("arch", list(WRITE_CASES))
def test_hf_writer_round_trips_through_transformers(transformers, tmp_path, arch):
    config = vitkit.ViTConfig(img_size=32, patch_size=8, embed_dim=128, depth=2, num_heads=4, norm_eps=1e-12,
                              **WRITE_CASES[arch])
    model = randomize(vitkit.VisionTransformer(config))
    folder = vitkit.save_pretrained(model, tmp_path / arch, format="hf")
    ref = getattr(transformers, arch).from_pretrained(folder).eval()
    x = images()
    out = _outputs(ref, x)
    if arch == "ViTModel":
        assert max_diff(model(x), out.pooler_output) <= TOL
        assert max_diff(model.forward_features(x), out.last_hidden_state) <= TOL
    elif arch == "SiglipVisionModel":
        assert max_diff(model(x), out.pooler_output) <= TOL
    else:
        assert max_diff(model(x), out.logits) <= TOL
    auto = (transformers.AutoModelForImageClassification if config.num_classes else transformers.AutoModel)
    assert type(auto.from_pretrained(folder)).__name__ == arch


def test_hf_writer_refuses_what_transformers_cannot_run(tmp_path):
    model = vitkit.VisionTransformer(vitkit.ViTConfig(img_size=32, patch_size=8, embed_dim=64, depth=1, num_heads=1,
                                                      reg_tokens=4, global_pool="avg"))
    with pytest.raises(CheckpointError, match="register tokens; average or no pooling"):
        vitkit.save_pretrained(model, tmp_path / "x", format="hf")


def test_create_model_takes_the_checkpoints_norm_eps(transformers, tmp_path):
    """A registry architecture loaded from HF weights computes what the HF model does (eps 1e-12)."""
    vitkit.register(vitkit.ModelEntry(name="test_weights_hf_tiny", config=dict(
        img_size=32, patch_size=8, embed_dim=128, depth=2, num_heads=4, mlp_ratio=2.0, num_classes=7),
        pretrained_cfg=vitkit.PretrainedCfg(input_size=(3, 32, 32), num_classes=7)))
    ref = _hf(transformers, "ViTForImageClassification", "ViTConfig", num_labels=7)
    model = vitkit.create_model("test_weights_hf_tiny", pretrained=_save(ref, tmp_path / "vitc"))
    assert model.config.norm_eps == 1e-12
    x = images()
    assert max_diff(model(x), _outputs(ref, x).logits) <= TOL


def test_sharded_checkpoint(transformers, tmp_path):
    ref = _hf(transformers, "ViTModel", "ViTConfig")
    ref.save_pretrained(tmp_path / "sharded", max_shard_size="300KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    model = vitkit.from_pretrained(tmp_path / "sharded")
    x = images()
    assert max_diff(model.forward_features(x), _outputs(ref, x).last_hidden_state) <= TOL


DINO = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=28, patch_size=14)
SWIGLU, LABELS, REGS = {"use_swiglu_ffn": True}, {"num_labels": 5}, {"num_register_tokens": 3, "image_size": 42}
DINO_CASES = [("Dinov2Model", {}), ("Dinov2Model", SWIGLU), ("Dinov2ForImageClassification", LABELS),
              ("Dinov2WithRegistersModel", REGS), ("Dinov2WithRegistersModel", {**REGS, **SWIGLU}),
              ("Dinov2WithRegistersForImageClassification", {**REGS, **LABELS})]


def _dino(transformers, arch: str, extra: dict):
    """A transformers DINOv2 of ``arch`` with every parameter drawn at random (layer scale, mask and register
    tokens, which start at zero or one, too)."""
    config = (transformers.Dinov2WithRegistersConfig if "Registers" in arch else transformers.Dinov2Config)
    return randomize(getattr(transformers, arch)(config(**{**DINO, **extra})))


def _same_outputs(theirs, model, x, classifier: bool) -> None:
    """vitkit's outputs equal transformers' within 1e-5 (fp32): logits, or features and the pooled token."""
    with torch.no_grad():
        out, features = theirs(pixel_values=x), model.forward_features(x)
        if classifier:
            torch.testing.assert_close(model(x), out.logits, atol=1e-5, rtol=1e-5)
        else:
            torch.testing.assert_close(features, out.last_hidden_state, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(model(x), out.pooler_output, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch, extra", DINO_CASES)
def test_dinov2_folders_load_with_transformers_outputs(transformers, tmp_path, arch, extra):
    ref = _dino(transformers, arch, extra)
    model = vitkit.from_pretrained(_save(ref, tmp_path / "dino")).eval()
    report = model.load_report
    assert report.ok and not report.newly_initialized and report.dropped == ["embeddings.mask_token"]
    assert model.config.init_values is not None and model.config.norm_eps == 1e-6
    assert model.config.reg_tokens == extra.get("num_register_tokens", 0)
    classifier = "ForImageClassification" in arch
    assert model.global_pool == ("token_avg" if classifier else "token")
    side = DINO["image_size"] if "Registers" not in arch else REGS["image_size"]
    # the native grid, one resampled up and (registers: 3x3 positions) one down, where antialias counts
    for x in (torch.randn(2, 3, side, side), torch.randn(1, 3, 42, 56), torch.randn(1, 3, 28, 28)):
        _same_outputs(ref, model, x, classifier)
    again = vitkit.from_pretrained(vitkit.save_pretrained(model, tmp_path / "again")).eval()  # vitkit's own format
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("arch, extra", DINO_CASES)
def test_dinov2_written_for_transformers_loads_there_with_the_same_outputs(transformers, tmp_path, arch, extra):
    ref = _dino(transformers, arch, extra)
    model = vitkit.from_pretrained(_save(ref, tmp_path / "dino")).eval()
    folder = vitkit.save_pretrained(model, tmp_path / "back", format="hf")
    assert json.loads((folder / "config.json").read_text())["architectures"] == [arch]
    theirs, info = getattr(transformers, arch).from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    side = DINO["image_size"] if "Registers" not in arch else REGS["image_size"]
    for x in (torch.randn(2, 3, side, side), torch.randn(1, 3, 42, 56)):
        _same_outputs(theirs.eval(), model, x, "ForImageClassification" in arch)


def test_a_dinov2_transformers_cannot_hold_is_refused_in_one_line(transformers, tmp_path):
    model = vitkit.from_pretrained(_save(_dino(transformers, "Dinov2Model", {}), tmp_path / "dino"))
    model.reset_classifier(3)  # a class-token classifier: transformers' DINOv2 head reads the mean patch token too
    with pytest.raises(CheckpointError, match=r"it has a pooling other than .*transformers' DINOv2 classes lack"):
        vitkit.save_pretrained(model, tmp_path / "back", format="hf")
    assert not (tmp_path / "back" / "model.safetensors").exists()
