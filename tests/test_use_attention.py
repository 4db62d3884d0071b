"""Attention maps: PNGs with the image's aspect, also for fused-attention models; the maps' arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import vitkit
from vitkit import create_model
from vitkit.attention import (
    COLORBAR_PX,
    TITLE_PX,
    _title,
    attention_map,
    attention_rollout,
    last_layer_attention,
    overlay,
    save_attention_map,
)
from vitkit.cli import main
from vitkit.errors import VitkitError


@pytest.fixture(scope="module")
def rocket_file(photos, tmp_path_factory):
    path = tmp_path_factory.mktemp("att") / "rocket.jpg"
    Image.fromarray(photos["rocket"]).save(path)  # 640 x 427, landscape
    return path


def _aspect(size: tuple[int, int]) -> float:
    """The aspect of the overlay inside an annotated PNG (without the title band and the colour bar)."""
    return (size[0] - COLORBAR_PX) / (size[1] - TITLE_PX)


@pytest.mark.parametrize("method", ["rollout", "last"])
def test_cli_writes_png_with_the_image_aspect(rocket_file, tmp_path, capsys, method):
    out = tmp_path / f"{method}.png"
    saved = vitkit.save_pretrained(create_model("vit_digits"), tmp_path / "digits")
    assert main(["attention", str(rocket_file), "--model", str(saved), "--out", str(out), "--method", method]) == 0
    assert str(out) in capsys.readouterr().out
    w, h = Image.open(rocket_file).size
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (w + COLORBAR_PX, h + TITLE_PX)
        # the overlay sits pixel for pixel under the title band
        pixels = np.asarray(img.convert("RGB"), dtype=np.float32)[TITLE_PX:, :w]
    shown, heat = attention_map(rocket_file, str(saved), method=method)  # the part of the image the model sees
    left, top, right, bottom = vitkit.ImageProcessor.from_pretrained(saved).view_box(w, h)
    assert shown.size == (round(right) - round(left), round(bottom) - round(top))
    expected = np.asarray(overlay(shown, heat), dtype=np.float32)
    inside = pixels[round(top):round(top) + shown.height, round(left):round(left) + shown.width]
    assert np.abs(inside - expected).mean() < 2.0


@pytest.mark.parametrize("name,kwargs", [
    ("deit_tiny_distilled_patch16_224", {}),
    ("vit_base_patch16_siglip_224", {"embed_dim": 192, "num_heads": 3}),  # no class token: MAP head
    ("vit_small_patch14_reg4_dinov2", {"img_size": 224}),  # register tokens
])
def test_other_families_and_panels(photos, tmp_path, name, kwargs):
    model = create_model(name, depth=2, **kwargs)
    img = Image.fromarray(photos["astronaut"]).resize((300, 180))
    out = save_attention_map(img, tmp_path / "map.png", model=model, discard_ratio=0.2)
    assert _aspect(Image.open(out).size) == pytest.approx(300 / 180)
    panels = save_attention_map(img, tmp_path / "panels.png", model=model, panels=True)
    assert Image.open(panels).width > 2.5 * Image.open(panels).height


def _explicit_attention(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Softmax(q k^T / sqrt(d)) written out from the block's weights: (B, heads, N, N)."""
    attn = block.attn
    B, N, C = x.shape
    qkv = attn.qkv(block.norm1(x)).reshape(B, N, 3, attn.num_heads, C // attn.num_heads).permute(2, 0, 3, 1, 4)
    return (qkv[0] @ qkv[1].transpose(-2, -1) * attn.scale).softmax(-1)


def test_rollout_and_last_layer_arithmetic():
    torch.manual_seed(0)
    model = create_model("vit_tiny_patch16_224", depth=3, img_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tokens, maps = model.embed(x), []
        for block in model.blocks:
            maps.append(_explicit_attention(block, tokens))
            tokens = block(tokens)  # the fused path
    n = maps[0].shape[-1]
    joint = torch.eye(n).expand(2, n, n)
    for a in maps:
        a = a.mean(1) + torch.eye(n)
        joint = (a / a.sum(-1, keepdim=True)) @ joint
    torch.testing.assert_close(attention_rollout(model, x), joint[:, 0, 1:].reshape(2, 4, 4))
    torch.testing.assert_close(last_layer_attention(model, x), maps[-1].mean(1)[:, 0, 1:].reshape(2, 4, 4))
    with pytest.raises(VitkitError, match="discard_ratio"):
        attention_rollout(model, x, discard_ratio=1.0)


def test_overlay_and_errors(photos, tmp_path, rocket_file):
    img = Image.fromarray(photos["coffee"])
    blended = overlay(img, np.eye(4), alpha=0.0)
    np.testing.assert_array_equal(np.asarray(blended), np.asarray(img))  # alpha 0: the image itself
    assert overlay(img, np.eye(4), alpha=1.0).size == img.size
    with pytest.raises(VitkitError, match=".png"):
        save_attention_map(rocket_file, tmp_path / "map.jpg", model="vit_digits")
    with pytest.raises(VitkitError, match="method"):
        save_attention_map(rocket_file, tmp_path / "map.png", model="vit_digits", method="gradcam")


def test_the_title_names_the_model_and_its_predicted_class(photos):
    model = create_model("vit_digits").eval()
    img = Image.fromarray(photos["coffee"])
    top = vitkit.predict(img, model, top_k=1)[0].top_k[0]
    title = _title(model, model, "rollout", img)
    assert title.startswith("vit_digits - attention rollout")
    assert f"predicted: {top.label} ({top.index}), {top.probability:.1%}" in title
    tower = create_model("vit_base_patch16_siglip_224", depth=1, embed_dim=192, num_heads=3)
    assert "no classifier head" in _title(tower, "siglip", "last", img)
    assert _title(model, "vit_digits", "last", img, random=True).startswith("vit_digits (RANDOM weights) - last")


def test_the_title_of_a_multi_label_model_shows_its_sigmoid_score_as_predict_does(photos):
    model = create_model("vit_digits").eval()
    model.pretrained_cfg = model.pretrained_cfg.replace(multi_label=True)
    img = Image.fromarray(photos["coffee"])
    top = vitkit.predict(img, model, top_k=1)[0].top_k[0]
    assert f"predicted: {top.label} ({top.index}), {top.probability:.1%}" in _title(model, model, "rollout", img)
