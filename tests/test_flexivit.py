"""FlexiViT at another patch size (``vitkit.with_patch_size``): the kernel and position embedding resampled as timm
does, giving a timm model built at that patch size the same pre-logits features (fp32, 1e-5, every parameter
re-drawn) at 240x240 and 120x240; the caller's model unchanged."""

from __future__ import annotations

import pytest
import torch

import vitkit
from _text_refs import redraw

timm = pytest.importorskip("timm")


def _timm_at(model, patch: int):
    """timm's VisionTransformer of the same FlexiViT at ``patch``, with timm's own resampling of the weights."""
    from timm.layers import resample_abs_pos_embed, resample_patch_embed

    c = model.config
    ref = timm.create_model("flexivit_small", pretrained=False, depth=c.depth, patch_size=patch,
                            img_size=c.img_size, num_classes=c.num_classes, dynamic_img_size=True).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["patch_embed.proj.weight"] = resample_patch_embed(state["patch_embed.proj.weight"], [patch, patch])
    grid = [c.img_size[0] // patch, c.img_size[1] // patch]
    state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], grid, old_size=list(c.grid_size),
                                                num_prefix_tokens=0)
    ref.load_state_dict(state)
    return ref


@pytest.mark.parametrize("patch", [8, 30, 10])
def test_a_flexivit_at_another_patch_size_equals_timm_resampled_alike(patch):
    torch.manual_seed(0)
    model = vitkit.create_model("flexivit_small", depth=2, num_classes=7).eval()
    redraw(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    small = vitkit.with_patch_size(model, patch)
    assert small.config.patch_size == (patch, patch) and small.config.img_size == model.config.img_size
    assert not small.training and small.model_name == model.model_name
    ref = _timm_at(model, patch)
    for size in ((240, 240), (120, 240)):  # FlexiViT's size, and a non-square one (positions resampled again)
        x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(patch))
        with torch.no_grad():
            got = small.forward_head(small.forward_features(x), pre_logits=True)
            want = ref.forward_head(ref.forward_features(x), pre_logits=True)
        assert (got - want).abs().max() < 1e-5, size
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the caller's model as it was
    assert model.config.patch_size == (16, 16)


def test_a_patch_size_that_does_not_fit_is_one_config_error():
    model = vitkit.create_model("flexivit_small", depth=1)
    with pytest.raises(vitkit.ConfigError, match=r"patch_size=7 does not divide the model's input size 240x240"):
        vitkit.with_patch_size(model, 7)
    for bad in (0, -8, 8.0, "8", (8,), True):
        with pytest.raises(vitkit.ConfigError, match="patch_size="):
            vitkit.with_patch_size(model, bad)


def test_loading_at_another_patch_size_equals_the_run_time_copy(tmp_path):
    model = vitkit.create_model("flexivit_small", depth=1).eval()
    vitkit.save_pretrained(model, tmp_path / "fx", format="timm")
    loaded = vitkit.create_model("flexivit_small", depth=1, patch_size=8, pretrained=str(tmp_path / "fx"))
    assert any("resampled to (8, 8)" in note for note in loaded.load_report.adapted)
    x = torch.randn(1, 3, 240, 240)
    with torch.no_grad():
        assert (loaded(x) - vitkit.with_patch_size(model, 8)(x)).abs().max() < 1e-6
