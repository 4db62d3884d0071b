"""`inspect`: totals equal published figures and an independent count; the data path shows every shape."""

from __future__ import annotations

import json

import pytest
import torch

from vitkit import create_model
from vitkit.cli import main
from vitkit.summary import summarize

# Published figures (timm's model cards / benchmark tables: params, GMACs at the model's input size)
PUBLISHED = {
    "vit_base_patch16_224": (86.57e6, 17.58),
    "vit_tiny_patch16_224": (5.72e6, 1.26),
    "vit_small_patch16_224": (22.05e6, 4.61),
    "vit_base_patch32_224": (88.22e6, 4.41),
    "vit_base_patch16_384": (86.86e6, 55.54),
    "vit_large_patch16_224": (304.33e6, 61.60),
    "deit_base_distilled_patch16_224": (87.34e6, 17.68),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_totals_match_published_figures(name):
    params, gmacs = PUBLISHED[name]
    s = summarize(name)
    assert round(s.total_params / 1e6, 2) == round(params / 1e6, 2)
    assert round(s.macs / 1e9, 2) == gmacs
    assert s.trainable_params == s.total_params and s.frozen_params == 0


@pytest.mark.parametrize("name", ["vit_base_patch16_224", "deit_tiny_distilled_patch16_224",
                                  "vit_base_patch16_siglip_224", "vit_small_patch14_reg4_dinov2"])
def test_macs_equal_torch_flop_counter_on_timm(timm, name):
    """Independent count: torch.utils.flop_counter on timm's model (meta device) counts matmuls, convs and
    attention (2 FLOPs per MAC) but not LayerNorm; fvcore's LayerNorm rule is 5 per element (affine)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        ref = timm.create_model(name, pretrained=False).eval()
    counter = FlopCounterMode(display=False)
    with counter:  # no torch.no_grad(): the counter's module tracker needs autograd on
        ref(torch.empty(1, *ref.pretrained_cfg["input_size"], device="meta"))
    s = summarize(name)
    norm_macs = sum(m.macs for m in s.modules if m.type == "LayerNorm")
    assert s.macs - norm_macs == counter.get_total_flops() // 2
    assert s.total_params == sum(p.numel() for p in ref.parameters())


def test_vit_base_data_path():
    s = summarize("vit_base_patch16_224")
    shapes = [tuple(shape) for _, shape in s.path]
    assert shapes == [("B", 3, 224, 224), ("B", 768, 14, 14), ("B", 196, 768), ("B", 197, 768), ("B", 197, 768),
                      ("B", 197, 768), ("B", 768), ("B", 1000)]
    text = s.to_text()
    for line in ("(B, 3, 224, 224)", "(B, 768, 14, 14)", "(B, 196, 768)", "(B, 197, 768)", "(B, 1000)",
                 "86,567,656", "17.58G", "blocks.0.attn"):
        assert line in text
    stages = {label: (p, m) for label, p, m in s.stages}
    assert sum(p for p, _ in stages.values()) == s.total_params
    assert sum(m for _, m in stages.values()) == s.macs


def test_model_object_frozen_params_and_batch():
    model = create_model("vit_tiny_patch16_224", depth=2, num_classes=10)
    for p in model.patch_embed.parameters():
        p.requires_grad_(False)
    s = summarize(model, img_size=(160, 96), batch_size=4)
    assert s.frozen_params == sum(p.numel() for p in model.patch_embed.parameters())
    assert s.input_shape == [4, 3, 160, 96] and s.path[1][1] == [4, 192, 10, 6] and s.path[-1][1] == [4, 10]
    assert model.pos_embed.device.type == "cpu"  # the caller's model is untouched


def test_cli_inspect_text_and_json(capsys):
    assert main(["inspect", "vit_base_patch16_224"]) == 0
    assert "17.58G" in capsys.readouterr().out
    assert main(["inspect", "vit_digits", "--format", "json", "--img-size", "64"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["input_shape"] == ["B", 3, 64, 64]
    assert data["path"][-1] == {"step": "head: linear classifier", "shape": ["B", 10]}
    assert data["total_params"] == sum(p.numel() for p in create_model("vit_digits", img_size=64).parameters())
    assert main(["inspect", "vit_bse_patch16_224"]) == 2
    assert "vit_base_patch16_224" in capsys.readouterr().err


def test_wording_of_prefix_tokens():
    """'a class token', 'no prefix tokens'; never 'token(s)' or 'prepend no prefix tokens'."""
    plain = summarize("vit_digits").to_text()
    siglip = summarize("vit_base_patch16_siglip_224").to_text()
    dinov2 = summarize("vit_small_patch14_reg4_dinov2").to_text()
    assert "prefix: a class token," in plain and "prepend class token, add pos_embed" in plain
    assert "no prefix tokens," in siglip and "prepend" not in siglip
    assert "prefix: a class token + 4 register tokens" in dinov2
    assert not any("token(s)" in text for text in (plain, siglip, dinov2))


def test_macs_of_a_rotary_model_count_the_rotation_of_q_and_k():
    """A DINOv3 model (rotary, a class token and 4 registers) counted by hand from its config: patch conv, per block
    two affine LayerNorms (5/element), qkv, Q @ K^T and attn @ V, rope on q and k of the patch tokens (2/element
    each), proj, the MLP; the final norm."""
    import vitkit
    from vitkit.summary import summarize

    model = vitkit.create_model("vit_small_patch16_dinov3", depth=2)
    c = model.config
    P = (c.img_size[0] // 16) * (c.img_size[1] // 16)
    N, C, H = P + c.num_prefix_tokens, c.embed_dim, int(c.embed_dim * c.mlp_ratio)
    rope = 2 * 2 * P * C
    block = 5 * N * C + N * C * 3 * C + 2 * N * N * C + rope + N * C * C + 5 * N * C + N * C * H + N * H * C
    want = C * P * 3 * 16 * 16 + c.depth * block + 5 * N * C
    assert summarize(model).macs == want
    assert summarize(model).to_dict()["macs"] == want
    assert "rotary embeddings: 2/element of q and of k" in summarize(model).to_text()
    assert "rotary" not in summarize(vitkit.create_model("vit_small_patch16_224", depth=1)).to_text()
