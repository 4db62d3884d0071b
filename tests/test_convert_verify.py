"""`vitkit convert --verify` loads the written file on its own, as a user of the target library would, runs real
photos through each side's own preprocessing, and names what the target format does not keep (exit 1 unless
--accept-loss)."""

from __future__ import annotations

import json

import pytest

import vitkit
from vitkit.cli import main
from vitkit.config import IMAGENET_MEAN, IMAGENET_STD, PretrainedCfg

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=3)


def saved(tmp_path, fmt: str = "vitkit", pcfg: PretrainedCfg | None = None, **config) -> str:
    model = vitkit.VisionTransformer(vitkit.ViTConfig(**{**TINY, **config}))
    model.pretrained_cfg = pcfg or PretrainedCfg(input_size=(3, 32, 32), num_classes=3, crop_pct=0.875,
                                                 mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                                 label_names=("cat", "coffee", "rocket"))
    return str(vitkit.save_pretrained(model, tmp_path / f"src-{fmt}", format=fmt))


def convert(capsys, *args: str) -> tuple[int, str]:
    code = main(["convert", *args, "--verify"])
    return code, capsys.readouterr().out


@pytest.mark.parametrize("to", ["vitkit", "timm", "hf"])
def test_a_faithful_conversion_passes(tmp_path, capsys, to):
    squash = PretrainedCfg(input_size=(3, 32, 32), num_classes=3, crop_pct=0.8, crop_mode="squash",
                           interpolation="bilinear", label_names=("cat", "coffee", "rocket"))
    code, out = convert(capsys, saved(tmp_path, pcfg=squash, act_layer="gelu_tanh"), str(tmp_path / "out"), "--to", to)
    assert code == 0, out
    assert "does not keep" not in out and "max |difference|: 0" in out
    if to == "hf":  # transformers resamples position embeddings its own way: said, not a failure
        assert "note:" in out and "posemb_resample='timm' (reads back as 'hf')" in out


def test_hf_model_written_as_timm_loses_its_norm_eps(transformers, tmp_path, capsys):
    """timm builds LayerNorm(eps=1e-6) and its config.json cannot say otherwise (model_args has no eps)."""
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                    image_size=32, patch_size=8, num_labels=3)
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path / "hf")
    code, out = convert(capsys, str(tmp_path / "hf"), str(tmp_path / "t"), "--to", "timm")
    assert code == 1 and "norm_eps=1e-12 (reads back as 1e-06)" in out and "FAILED" in out
    code, out = convert(capsys, str(tmp_path / "hf"), str(tmp_path / "t2"), "--to", "timm", "--accept-loss")
    assert code == 0 and "accepted" in out


def test_timm_reads_the_activation_vitkit_writes(timm, tmp_path):
    """act_layer travels in a timm folder's model_args, and timm's own loader builds it from there."""
    path = saved(tmp_path, "timm", act_layer="gelu_tanh")
    args = json.loads((tmp_path / "src-timm" / "config.json").read_text())["model_args"]
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(**{k: v for k, v in args.items()})
    assert type(model.blocks[0].mlp.act).__name__ == "GELUTanh"
    assert vitkit.load_model(path).config.act_layer == "gelu_tanh"


def test_new_head_is_a_difference(tmp_path, capsys):
    code, out = convert(capsys, saved(tmp_path), str(tmp_path / "out"), "--to", "vitkit", "--num-classes", "10")
    assert code == 1 and "num_classes=3 (reads back as 10)" in out


def test_npz_keeps_neither_names_nor_crop_nor_exact_gelu(tmp_path, capsys):
    code, out = convert(capsys, saved(tmp_path), str(tmp_path / "out.npz"), "--to", "npz")
    assert code == 1
    for lost in ("act_layer='gelu' (reads back as 'gelu_tanh')", "label_names=('cat', 'coffee', 'rocket')",
                 "resize_size=(36, 36) (reads back as (35, 35))", "mean="):
        assert lost in out, lost


def test_class_names_and_crop_reach_transformers(transformers, tmp_path, capsys):
    squash = PretrainedCfg(input_size=(3, 32, 32), num_classes=3, crop_pct=0.8, crop_mode="squash",
                           label_names=("cat", "coffee", "rocket"))
    code, out = convert(capsys, saved(tmp_path, pcfg=squash), str(tmp_path / "hf"), "--to", "hf")
    assert code == 0, out  # a squash and crop of an even margin: transformers' pixels are the same
    code, out = convert(capsys, saved(tmp_path), str(tmp_path / "hf2"), "--to", "hf")
    assert code == 1 and "crop_rounding='round' (reads back as 'floor')" in out  # timm's odd-margin rounding
    assert transformers.ViTForImageClassification.from_pretrained(tmp_path / "hf").config.id2label[1] == "coffee"


def test_lost_class_names_alone_are_a_warning_not_a_failure(tmp_path, capsys):
    """timm's config.json keeps no named label set ('digits'): the outputs are the same, only the names are lost."""
    plain = PretrainedCfg(input_size=(3, 32, 32), num_classes=10, crop_pct=0.875, label_names="digits")
    src = saved(tmp_path, pcfg=plain, num_classes=10)
    code, out = convert(capsys, src, str(tmp_path / "out"), "--to", "timm")
    assert "max |difference|: 0" in out and "FAILED" not in out, out
    assert code == 3 and "warning:" in out and "label_names='digits' (reads back as None)" in out, out
    assert (tmp_path / "out" / "model.safetensors").is_file()
    code, out = convert(capsys, src, str(tmp_path / "out2"), "--to", "timm", "--accept-loss")
    assert code == 0 and "accepted" in out


def test_a_failed_conversion_leaves_nothing_unless_asked(tmp_path, capsys):
    code, out = convert(capsys, saved(tmp_path), str(tmp_path / "out.npz"), "--to", "npz")
    assert code == 1 and "FAILED" in out and "removed (--keep-failed keeps it)" in out
    assert not (tmp_path / "out.npz").exists()
    code, out = convert(capsys, saved(tmp_path), str(tmp_path / "kept.npz"), "--to", "npz", "--keep-failed")
    assert code == 1 and (tmp_path / "kept.npz").is_file()
