"""More timm and transformers idioms, each checked against the library it comes from on the same weights."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import vitkit
from test_weights_refs import randomize
from vitkit.errors import ConfigError, InputSizeError
from vitkit.model import ViTOutput

TOL = dict(atol=1e-5, rtol=1e-5)


def _pair(timm, name: str, **kw):
    ref = timm.create_model(name, pretrained=False, depth=2, **kw).eval()
    randomize(ref)
    ours = vitkit.create_model(name, depth=2, **kw).eval()
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def test_global_pool_empty_string_means_no_pooling_as_in_timm(timm):
    ref, ours = _pair(timm, "vit_tiny_patch16_224", num_classes=0, global_pool="")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), **TOL)  # (2, 197, 192): every token
        ref.reset_classifier(0, "")
    full = vitkit.create_model("vit_tiny_patch16_224", depth=2).eval()
    full.load_state_dict({k: v for k, v in ref.state_dict().items()}, strict=False)
    full.reset_classifier(0, "")
    assert full.global_pool == "none"
    with torch.no_grad():
        torch.testing.assert_close(full(x), ref(x), **TOL)


def test_feature_info_answers_timms_questions(timm):
    ref = timm.create_model("vit_tiny_patch16_224", features_only=True, out_indices=(1, 3), pretrained=False, depth=4)
    ours = vitkit.create_model("vit_tiny_patch16_224", features_only=True, out_indices=(1, 3), depth=4)
    info, theirs = ours.feature_info, ref.feature_info
    assert info.channels() == theirs.channels() and info.reduction() == theirs.reduction()
    assert info.channels(0) == theirs.channels(0) and info.module_name() == theirs.module_name()
    assert info.get_dicts()[1]["module"] == "blocks.3" and len(info) == 2


def test_list_models_takes_timms_arguments(timm):
    assert vitkit.list_models(filter="deit_tiny*") == ["deit_tiny_distilled_patch16_224", "deit_tiny_patch16_224"]
    assert vitkit.list_models(["deit_tiny*", "vit_tiny*"], exclude_filters=["*distilled*", "*384", "*dinov3*"]) == [
        "deit_tiny_patch16_224", "vit_tiny_patch16_224"]
    published = vitkit.list_models("vit_tiny*", pretrained=True)
    assert published and all("." in n for n in published)  # name.tag, as timm lists them
    assert set(published) <= set(timm.list_models("vit_tiny*", pretrained=True))
    assert "vit_digits" not in {n.split(".")[0] for n in vitkit.list_models(pretrained=True)}  # nothing published
    assert vitkit.list_models("vit_tiny*", pretrained=True, include_tags=False) == [n.split(".")[0] for n in published]


def test_resolve_data_config_called_as_timm_users_call_it(timm):
    from timm.data import resolve_data_config as timm_resolve

    for name in ("vit_small_patch16_224", "vit_base_patch16_384", "vit_large_patch16_224"):
        with torch.device("meta"):  # only the models' descriptions are read
            ref = timm.create_model(name, pretrained=False)
        theirs = timm_resolve({}, model=ref)
        ours = vitkit.resolve_data_config({}, model=vitkit.create_model(name, device="meta"))
        assert ours == {k: theirs[k] for k in ours}, name
    m = vitkit.create_model("vit_digits")
    assert vitkit.resolve_data_config(m) == vitkit.resolve_data_config({}, model=m)
    assert vitkit.resolve_data_config({"img_size": 64, "crop_pct": 0.875}, model=m)["input_size"] == (3, 64, 64)
    with pytest.raises(ConfigError, match="needs a model"):
        vitkit.resolve_data_config({})


def test_transformers_processor_call_and_pixel_values_keyword(transformers, tmp_path):
    model = vitkit.create_model("vit_digits").eval()
    processor = vitkit.ImageProcessor.from_model(model)
    img = Image.new("RGB", (50, 40), (200, 30, 90))
    inputs = processor(images=[img, img], return_tensors="pt")
    assert list(inputs) == ["pixel_values"] and torch.equal(inputs.pixel_values, processor([img, img]))
    with torch.no_grad():
        out = model(**inputs)
        assert isinstance(out, ViTOutput) and torch.equal(out.logits, model(inputs["pixel_values"]))
    assert isinstance(processor(images=img, return_tensors="np")["pixel_values"], type(inputs.pixel_values.numpy()))
    with pytest.raises(ConfigError, match="return_tensors='tf'"):
        processor(images=img, return_tensors="tf")
    with pytest.raises(InputSizeError, match="once"):
        model(inputs.pixel_values, pixel_values=inputs.pixel_values)


def test_config_answers_transformers_names_and_says_where_labels_are(transformers):
    hf = transformers.ViTConfig(hidden_size=192, num_hidden_layers=3, num_attention_heads=3, intermediate_size=768,
                                image_size=32, num_channels=3)
    ours = vitkit.ViTConfig(embed_dim=192, depth=3, num_heads=3, mlp_ratio=4.0, img_size=32, num_classes=5)
    for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "num_channels"):
        assert getattr(ours, name) == getattr(hf, name), name
    assert ours.num_labels == 5
    with pytest.raises(AttributeError, match="pretrained_cfg.label_names"):
        _ = ours.id2label


def test_pretrained_cfg_overlay_file_and_checkpoint_path_load_as_in_timm(timm, tmp_path):
    from safetensors.torch import save_file

    source = randomize(timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2)).eval()
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "w.safetensors"))
    weights = str(tmp_path / "w.safetensors")
    x = torch.randn(2, 3, 224, 224)
    overlay = dict(file=weights, mean=(0.1, 0.2, 0.3), crop_pct=1.0)
    for kwargs in (dict(pretrained=True, pretrained_cfg_overlay=overlay), dict(checkpoint_path=weights)):
        ref = timm.create_model("vit_tiny_patch16_224", depth=2, **kwargs).eval()
        ours = vitkit.create_model("vit_tiny_patch16_224", depth=2, **kwargs).eval()
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref(x), **TOL)
        assert ours.pretrained_cfg.mean == tuple(ref.pretrained_cfg["mean"]), kwargs
        assert ours.pretrained_cfg.crop_pct == ref.pretrained_cfg["crop_pct"], kwargs
    # pretrained=True with a file and another class count: a new head, the backbone loaded (timm does the same)
    new = vitkit.create_model("vit_tiny_patch16_224", depth=2, num_classes=5, pretrained=True,
                              pretrained_cfg_overlay=dict(file=weights)).eval()
    assert new.head.out_features == 5 and new.load_report.newly_initialized == ["head.weight", "head.bias"]
    # checkpoint_path is your own model of this architecture: a different head is refused, not replaced
    with pytest.raises(vitkit.CheckpointError, match="does not fit"):
        vitkit.create_model("vit_tiny_patch16_224", depth=2, num_classes=5, checkpoint_path=weights)
    random = vitkit.create_model("vit_tiny_patch16_224", depth=2, pretrained_cfg_overlay=dict(file=weights))
    assert not torch.equal(random.pos_embed, new.pos_embed)  # without pretrained=True timm ignores the file too
    with pytest.raises(ConfigError, match="unknown key.*'fle'.*Did you mean.*file"):
        vitkit.create_model("vit_digits", pretrained_cfg_overlay=dict(fle=weights))
    with pytest.raises(ConfigError, match="does not download from URLs"):
        vitkit.create_model("vit_digits", pretrained=True, pretrained_cfg_overlay=dict(url="https://x/y.pth"))


def test_dynamic_img_size_means_what_timm_means(timm):
    ref, ours = _pair(timm, "vit_tiny_patch16_224", dynamic_img_size=True)
    for size in ((224, 224), (160, 192), (288, 240)):  # the position embedding resampled to each grid
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref(x), **TOL)
    assert isinstance(vitkit.create_model("vit_digits", dynamic_img_size=False), vitkit.VisionTransformer)
    with pytest.raises(ConfigError, match="dynamic_img_size='yes'"):
        vitkit.create_model("vit_digits", dynamic_img_size="yes")
