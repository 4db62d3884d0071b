"""Meta's original DINOv3 checkpoints against timm (its checkpoint filter is the reference reader of this layout),
random weights with every parameter re-drawn, fp32 within 1e-5, at 256x256 and 160x224."""

from __future__ import annotations

import pytest
import torch

import vitkit
from _refs import require
from _text_refs import redraw
from vitkit.errors import CheckpointError

TOL = 1e-5
NAMES = ["vit_small_patch16_dinov3", "vit_small_patch16_dinov3_qkvb", "vit_small_plus_patch16_dinov3"]


def _meta_state(ref: torch.nn.Module) -> dict[str, torch.Tensor]:
    """timm's DINOv3 weights in Meta's original layout: storage tokens, one qkv bias with a mask (a random key part
    the mask zeroes), ls1/ls2, SwiGLU as w1/w2/w3, and the buffers and pretraining tensors Meta also saves."""
    state = ref.state_dict()
    swiglu = any(".mlp.fc1_g." in k for k in state)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith("attn.v_bias"):
            continue
        if key.endswith("attn.q_bias"):
            prefix = key.removesuffix("q_bias")
            out[prefix + "qkv.bias"] = torch.cat([value, torch.randn_like(value), state[prefix + "v_bias"]])
            out[prefix + "qkv.bias_mask"] = torch.cat([torch.ones_like(value), torch.zeros_like(value),
                                                       torch.ones_like(value)])
            continue
        key = key.replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma").replace("reg_token", "storage_tokens")
        if swiglu:
            key = key.replace("mlp.fc1_g", "mlp.w1").replace("mlp.fc1_x", "mlp.w2").replace("mlp.fc2", "mlp.w3")
        out[key] = value
    if not any(k.endswith("qkv.bias") for k in out):  # the distilled models: an all-zero bias and its mask
        for i in range(len(ref.blocks)):
            out[f"blocks.{i}.attn.qkv.bias"] = torch.zeros(3 * ref.embed_dim)
            out[f"blocks.{i}.attn.qkv.bias_mask"] = torch.ones(3 * ref.embed_dim)
    out["rope_embed.periods"] = torch.linspace(1, 2, ref.embed_dim // ref.blocks[0].attn.num_heads // 4)
    out["mask_token"] = torch.zeros(1, ref.embed_dim)
    return out


@pytest.fixture(scope="module")
def timm():
    return require("timm")


@pytest.mark.parametrize("name", NAMES)
def test_a_meta_dinov3_checkpoint_loads_with_timms_outputs(timm, name, tmp_path):
    from timm.models.eva import checkpoint_filter_fn

    ref = timm.create_model(name, depth=2, pretrained=False).eval()
    redraw(ref)
    meta = _meta_state(ref)
    # the layout is Meta's as timm reads it: timm's own filter turns it back into the reference's weights
    again = timm.create_model(name, depth=2, pretrained=False).eval()
    again.load_state_dict(checkpoint_filter_fn(dict(meta), again), strict=True)
    torch.save(meta, tmp_path / "dinov3.pth")
    loaded = vitkit.from_pretrained(tmp_path / "dinov3.pth")  # the architecture from the file alone
    named = vitkit.create_model(name, depth=2, pretrained=tmp_path / "dinov3.pth")
    assert loaded.load_report.format == "dinov3" and loaded.load_report.ok
    assert "rope_embed.periods" in loaded.load_report.dropped and "mask_token" in loaded.load_report.dropped
    for size in ((256, 256), (160, 224)):
        x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            want = again.forward_head(again.forward_features(x), pre_logits=True)
            for model in (loaded, named):
                got = model.forward_head(model.forward_features(x), pre_logits=True)
                assert (got - want).abs().max() < TOL, (name, size)


def test_a_nonzero_bias_does_not_load_into_a_model_without_one(timm, tmp_path):
    ref = timm.create_model("vit_small_patch16_dinov3_qkvb", depth=2, pretrained=False).eval()
    redraw(ref)
    torch.save(_meta_state(ref), tmp_path / "dinov3.pth")
    with pytest.raises(CheckpointError, match="q_bias"):
        vitkit.create_model("vit_small_patch16_dinov3", depth=2, pretrained=tmp_path / "dinov3.pth")
