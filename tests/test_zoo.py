"""Today's ViT families (DINOv3, EVA-02, Perception Encoder, CLIP, AIMv2, DINOv2-L/g, FlexiViT, SigLIP sizes)
against timm: preprocessing equal to timm's pretrained configs (every registered name's parameter count is
checked against timm's in test_model_core), and pre-logits features of depth-2 models with every parameter
re-drawn, within 1e-5, at the default size and a non-square one (weights through vitkit's timm loader).
"""

from __future__ import annotations

import pytest
import torch

import vitkit
from _refs import import_timm
from vitkit.registry import get_entry
from vitkit.zoo_table import ROWS

ATOL = 1e-5
NAMES = [row[0] for row in ROWS]


@pytest.fixture(scope="module")
def timm():
    return import_timm()


def test_preprocessing_and_tags_equal_timm(timm):
    for name in NAMES:
        ref = timm.models.get_pretrained_cfg(name)
        ours = get_entry(name).pretrained_cfg
        assert (ours.input_size, ours.mean, ours.std, ours.crop_pct, ours.interpolation, ours.tag) == (
            tuple(ref.input_size), tuple(ref.mean), tuple(ref.std), ref.crop_pct, ref.interpolation, ref.tag), name
        assert ours.crop_mode == (ref.crop_mode if ref.crop_mode in ("center", "squash") else "center"), name


def test_every_family_answers_list_models():
    for word in ("dinov3", "clip", "eva02", "pe_", "aimv2", "dinov2", "flexivit", "siglip"):
        assert vitkit.list_models(word), word


# one name per distinct architecture form; widths shrunk to a tiny model, depth 2
PARITY = {
    "vit_small_patch16_dinov3": {},
    "vit_small_plus_patch16_dinov3_qkvb": {},  # SwiGLU aligned, q/v bias
    "eva02_tiny_patch14_224": {},  # packed SwiGLU, q/v bias, rotary on an absolute embedding
    "eva02_base_patch14_224": {},  # separate q/k/v, SwiGLU with inner norm
    "eva02_base_patch16_clip_224": {},  # + attention inner norm, token pooling
    "vit_pe_core_base_patch16_224": {},  # xy rotary, pre-norm, attention pool of 8 heads
    "vit_pe_spatial_base_patch16_512": {},  # no final norm
    "vit_base_patch16_clip_quickgelu_224": {},
    "aimv2_large_patch14_224": {},  # RMSNorm after the patch embedding, no biases, avg pool
    "vit_giant_patch14_dinov2": {},  # packed SwiGLU in timm's ViT
    "flexivit_small": {},
    "vit_so400m_patch16_siglip_256": {},
    "vit_giantopt_patch16_siglip_gap_256": {},
}
TINY = dict(embed_dim=96, num_heads=4, depth=2)  # 96: even packed SwiGLU widths


def _redraw(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


@pytest.mark.parametrize("name", sorted(PARITY))
def test_features_equal_timm(timm, name, tmp_path):
    from safetensors.torch import save_file

    entry = get_entry(name)
    size = tuple(entry.build_config().img_size)
    tiny = dict(TINY, num_classes=0)
    if entry.build_config().attn_pool_heads:
        tiny["attn_pool_num_heads"] = 4
    ref = timm.create_model(name, pretrained=False, dynamic_img_size=True, **tiny).eval()
    _redraw(ref, seed=len(name))
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, path)
    ours_tiny = {k: v for k, v in tiny.items() if k != "attn_pool_num_heads"}
    if "attn_pool_num_heads" in tiny:
        ours_tiny["attn_pool_heads"] = 4
    model = vitkit.create_model(name, pretrained=str(path), **ours_tiny).eval()
    p = entry.build_config().patch_size[0]
    for h, w in ((size[0], size[1]), (p * 5, p * 7)):
        x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(h + w))
        with torch.no_grad():
            want = ref.forward_head(ref.forward_features(x), pre_logits=True)
            got = model.forward_head(model.forward_features(x), pre_logits=True)
        assert got.shape == want.shape
        assert (got - want).abs().max().item() <= ATOL, (name, h, w)
