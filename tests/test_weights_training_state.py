"""A training run's checkpoint.pt is readable as a model: from_pretrained, `vitkit weights` and
`predict --model` use the weights under 'model' with the run's architecture, preprocessing and class names."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import vitkit
from vitkit.cli import main

TINY = dict(patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=3)
CLASSES = ["cat", "dog", "fox"]


def _state(model: vitkit.VisionTransformer, *, with_pcfg: bool) -> dict:
    """A training state laid out as the trainer writes it (Trainer.state_dict's keys)."""
    state = {"version": 1, "model": model.state_dict(), "optimizer": {"state": {}, "param_groups": []},
             "scheduler": {}, "scaler": {}, "rng": {}, "progress": {"epoch": 3, "step": 120},
             "model_config": model.config.to_dict(), "classes": CLASSES, "train_images": 90,
             "train_config": {"model": "vit_digits"}, "ema": None,
             "confusion": torch.zeros(3, 3, dtype=torch.int64)}  # a stray top-level tensor
    if with_pcfg:
        state["pretrained_cfg"] = model.pretrained_cfg.to_dict()
    return state


@pytest.fixture
def run(tmp_path):
    torch.manual_seed(0)
    model = vitkit.create_model("vit_digits", **TINY, act_layer="gelu_tanh").eval()
    model.pretrained_cfg = model.pretrained_cfg.replace(label_names=tuple(CLASSES), mean=(0.1, 0.2, 0.3))
    torch.save(_state(model, with_pcfg=True), tmp_path / "checkpoint.pt")
    torch.save(_state(model, with_pcfg=False), tmp_path / "old.pt")
    return model, tmp_path


def test_from_pretrained_loads_the_model_under_model(run) -> None:
    model, tmp = run
    loaded = vitkit.from_pretrained(tmp / "checkpoint.pt")
    assert loaded.config == model.config  # gelu_tanh and 2 heads: only the stated config tells them
    assert loaded.pretrained_cfg == model.pretrained_cfg and loaded.model_name == "vit_digits"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    old = vitkit.from_pretrained(tmp / "old.pt")  # no preprocessing stored: defaults, the run's class names
    assert old.pretrained_cfg.label_names == tuple(CLASSES)


def test_weights_lists_the_model_tensors_and_real_sizes(run, capsys) -> None:
    model, tmp = run
    assert main(["weights", str(tmp / "checkpoint.pt")]) == 0
    res = capsys.readouterr()
    on_disk = (tmp / "checkpoint.pt").stat().st_size / 2**20
    weights = sum(v.numel() * 4 for v in model.state_dict().values()) / 2**20
    assert f"(torch, {on_disk:.1f} MiB on disk, the model's weights {weights:.1f} MiB)" in res.out
    assert "weights under 'model' (listed below; loading the file loads them)" in res.out
    assert "blocks.0.attn.qkv.weight" in res.out and "\nconfusion " not in res.out
    assert "format:       vitkit" in res.out


def test_predict_takes_a_checkpoint_pt(run, capsys) -> None:
    _, tmp = run
    Image.new("RGB", (40, 40), (200, 30, 30)).save(tmp / "red.png")
    assert main(["predict", str(tmp / "red.png"), "--model", str(tmp / "checkpoint.pt"), "--top-k", "1"]) == 0
    res = capsys.readouterr()
    assert any(name in res.out for name in CLASSES), res.out
