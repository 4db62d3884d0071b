"""vitkit's tools on a rotary family (EVA-02 with separate q/k/v, and DINOv3): intermediates, features_only,
attention maps, LoRA on separate projections, freezing and layer-wise decay, summaries."""

from __future__ import annotations

import pytest
import torch

import vitkit
from vitkit.attention import attention_rollout, last_layer_attention
from vitkit.errors import ConfigError
from vitkit.lora import LoRAConfig, apply_lora
from vitkit.training.optim import apply_freeze, param_groups

TINY = dict(embed_dim=96, num_heads=4, depth=2, num_classes=5)


def _model(name: str = "eva02_base_patch14_224") -> torch.nn.Module:
    torch.manual_seed(0)
    return vitkit.create_model(name, **TINY).eval()


@pytest.mark.parametrize("hw", [(224, 224), (154, 224)])
def test_intermediates_and_features_only_follow_the_grid(hw):
    model = _model()
    x = torch.randn(1, 3, *hw)
    final, maps = model.forward_intermediates(x, indices=2)
    grid = (hw[0] // 14, hw[1] // 14)
    assert final.shape == (1, 1 + grid[0] * grid[1], 96) and [m.shape for m in maps] == [(1, 96, *grid)] * 2
    backbone = vitkit.create_model("vit_small_patch16_dinov3", features_only=True, out_indices=(0, 1),
                                   embed_dim=96, num_heads=4, depth=2)
    outs = backbone(torch.randn(1, 3, 160, 224))
    assert [o.shape for o in outs] == [(1, 96, 10, 14)] * 2


def test_attention_maps_of_a_rotary_model():
    model = _model()
    x = torch.randn(2, 3, 224, 224)
    assert last_layer_attention(model, x).shape == (2, 16, 16)
    assert attention_rollout(model, x).shape == (2, 16, 16)
    out = model(x, output_attentions=True)
    assert torch.allclose(out.logits, model(x), atol=1e-5)  # the explicit attention path computes the same


def test_lora_on_separate_q_and_v():
    model = _model()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        before = model(x)
    apply_lora(model, LoRAConfig(rank=4, targets=("q", "v")))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora" in n or n.startswith("head.") for n in trainable), trainable
    assert any("attn.q_proj" in n for n in trainable) and any("attn.v_proj" in n for n in trainable)
    with torch.no_grad():
        assert torch.allclose(model(x), before, atol=1e-6)  # adapters start at zero
    with pytest.raises(ConfigError, match="q, k, v"):
        apply_lora(_model(), LoRAConfig(rank=4, targets=("qkv",)))


def test_freeze_and_layer_decay_cover_rotary_models():
    model = _model("vit_small_plus_patch16_dinov3")
    apply_freeze(model, "blocks:1")
    assert not model.blocks[0].mlp.fc1_g.weight.requires_grad and model.blocks[1].mlp.fc1_g.weight.requires_grad
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.75)
    grouped = {id(p) for g in groups for p in g["params"]}
    assert grouped == {id(p) for p in model.parameters() if p.requires_grad}


def test_summary_of_a_rotary_model():
    text = vitkit.summarize("vit_small_patch16_dinov3").to_text()
    assert "blocks" in text


def test_predict_and_the_weights_listing_of_a_rotary_model(tmp_path):
    """predict runs a DINOv3 classifier saved to a folder as the model runs (the processor's pixels, a softmax over
    its logits), and `vitkit weights` names the architecture of its file."""
    from _cli import run_cli
    from vitkit.processor import ImageProcessor

    model = _model("vit_small_patch16_dinov3")
    folder = vitkit.save_pretrained(model, tmp_path / "dino")
    pixels = torch.randint(0, 256, (2, 3, 200, 180), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    results = vitkit.predict(pixels, str(folder), top_k=3)
    x = ImageProcessor.from_model(model)(list(pixels))
    with torch.no_grad():
        probs = model(x).softmax(-1)
    for result, p in zip(results, probs):
        top = p.topk(3)
        assert [pred.index for pred in result.top_k] == top.indices.tolist()
        assert [pred.probability for pred in result.top_k] == pytest.approx(top.values.tolist(), abs=1e-5)
    res = run_cli("weights", str(folder / "model.safetensors"))
    assert res.returncode == 0, res.stderr
    arch = next(line for line in res.stdout.splitlines() if line.startswith("architecture:"))
    assert "posemb=none rope=dinov3 layer_scale=True" in arch and "num_classes=5" in arch, arch


def test_models_of_one_shape_but_another_block_form_are_not_the_same_architecture():
    """A DINOv3 ViT-S/16 has the shapes of its q/v-bias and SwiGLU siblings' widths, not their blocks: the weights
    listing's match names it alone, and a plain ViT of the same widths is not a DINOv3."""
    from vitkit.registry import known_configs
    from vitkit.weights.inventory import _matches

    known = known_configs()
    for name in ("vit_small_patch16_dinov3", "vit_small_patch16_dinov3_qkvb", "vit_small_plus_patch16_dinov3"):
        assert _matches(known[name], known, stated=None) == (name, [])
    plain = known["vit_small_patch16_dinov3"].replace(rope="none", posemb="learn", img_size=224)
    match, also = _matches(plain, known, stated=None)
    assert not any("dinov3" in n for n in [match or "", *also])
