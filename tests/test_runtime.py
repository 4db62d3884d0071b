"""One runtime for every use: device resolution, and every entry point hands a caller's model back as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import vitkit
from vitkit.errors import ConfigError
from vitkit.runtime import borrowed, eval_mode, pick_device


@pytest.mark.parametrize("name", ["cuda", "cuda:1", "gpu", "bogus", "mps", "meta", 3.5])
def test_pick_device_refuses_what_this_machine_cannot_run_in_one_line(name):
    if str(name).startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")  # CI and the dev machines have none; the test targets them
    with pytest.raises(ConfigError, match="device=") as err:
        pick_device(name)
    assert "\n" not in str(err.value)


def test_pick_device_auto_and_cpu():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(None) == pick_device("auto")
    assert pick_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")


def _mixed_mode_model() -> torch.nn.Module:
    """A training-mode model with one submodule in eval mode (as a user freezing a block's dropout has)."""
    model = vitkit.create_model("vit_digits", depth=2)
    model.train()
    model.blocks[0].eval()
    model.head.weight.requires_grad_(False)
    return model


def _snapshot(model: torch.nn.Module) -> dict:
    return {"modes": {n: m.training for n, m in model.named_modules()},
            "params": {n: (p.data_ptr(), p.device, p.requires_grad, p.detach().clone())
                       for n, p in model.named_parameters()}}


def _assert_unchanged(model: torch.nn.Module, before: dict) -> None:
    after = _snapshot(model)
    assert after["modes"] == before["modes"], "the entry point changed a module's train/eval mode"
    for name, (ptr, device, grad, value) in before["params"].items():
        now = after["params"][name]
        assert (now[0], now[1], now[2]) == (ptr, device, grad), f"{name} was replaced, moved or re-flagged"
        assert torch.equal(now[3], value), f"{name} changed value"


@pytest.fixture
def digit_png(tmp_path):
    path = tmp_path / "d.png"
    Image.fromarray((np.random.rand(32, 32, 3) * 255).astype(np.uint8)).save(path)
    return path


ENTRY_POINTS = {
    "predict": lambda m, img, tmp: vitkit.predict([img], m, top_k=2),
    "extract_features": lambda m, img, tmp: vitkit.extract_features([img], tmp / "f.npy", model=m, num_workers=1),
    "attention_map": lambda m, img, tmp: vitkit.attention.attention_map(img, m, method="last"),
    "save_attention_map": lambda m, img, tmp: vitkit.save_attention_map(img, tmp / "a.png", model=m, panels=True),
    "summarize": lambda m, img, tmp: vitkit.summarize(m),
    "export_onnx": lambda m, img, tmp: vitkit.export_onnx(m, tmp / "m.onnx"),
    "ImageProcessor.from_model": lambda m, img, tmp: vitkit.ImageProcessor.from_model(m)([img]),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_entry_points_leave_the_callers_model_as_they_found_it(entry, digit_png, tmp_path):
    model = _mixed_mode_model()
    before = _snapshot(model)
    ENTRY_POINTS[entry](model, digit_png, tmp_path)
    _assert_unchanged(model, before)


def test_the_model_is_handed_back_even_when_the_use_fails(digit_png):
    model = _mixed_mode_model()
    before = _snapshot(model)
    with pytest.raises(vitkit.DataError, match="1 labels were given"):  # raised while the model is borrowed
        vitkit.predict([digit_png], model, labels=["only one"])
    _assert_unchanged(model, before)


def test_inference_borrows_in_eval_mode_and_restores_every_submodule():
    model = _mixed_mode_model()
    with borrowed(model) as net:
        assert not any(m.training for m in net.modules())
    assert model.training and not model.blocks[0].training and model.blocks[1].training
    with pytest.raises(RuntimeError), eval_mode(model):
        raise RuntimeError("boom")
    assert model.training and not model.blocks[0].training


# ---------------------------------------------------------------------------------------------- reported bugs
def test_image_processor_from_pretrained_reads_no_weights(tmp_path, monkeypatch):
    """It reads the checkpoint's headers and config only: building or loading a model would fail here."""
    folder = vitkit.save_pretrained(vitkit.create_model("vit_digits"), tmp_path / "m")
    want = vitkit.ImageProcessor.from_model(vitkit.from_pretrained(folder))

    def no_loading(*args, **kwargs):
        raise AssertionError("ImageProcessor.from_pretrained loaded the weights")

    monkeypatch.setattr(vitkit.weights.load, "fit", no_loading)
    monkeypatch.setattr(vitkit.weights.load, "build", no_loading)
    monkeypatch.setattr(vitkit.model.VisionTransformer, "__init__", no_loading)
    assert vitkit.ImageProcessor.from_pretrained(folder).to_dict() == want.to_dict()


def test_summarize_copies_no_weight_of_the_callers_model(monkeypatch):
    model = vitkit.create_model("vit_digits")

    def no_copy(self, memo):
        raise AssertionError("summarize deep-copied a parameter's data")

    monkeypatch.setattr(torch.nn.Parameter, "__deepcopy__", no_copy)
    summary = vitkit.summarize(model)
    assert summary.to_text() and next(model.parameters()).device.type == "cpu"


def test_config_has_no_unread_extra_field_and_reads_old_files():
    assert "extra" not in vitkit.ViTConfig().to_dict()
    legacy = {**vitkit.ViTConfig(depth=2).to_dict(), "extra": {}}  # what vitkit 0.1.0 wrote in every config.json
    assert vitkit.ViTConfig.from_dict(legacy).depth == 2


def test_what_has_the_form_of_a_path_fails_as_a_missing_path(tmp_path):
    from vitkit.runtime import load_model

    (tmp_path / "runs").mkdir()
    for spec, where in ((tmp_path / "runs" / "nosuch" / "best", f"('{tmp_path / 'runs'}' has no 'nosuch')"),
                        ("nosuch.safetensors", "")):
        with pytest.raises(vitkit.CheckpointError, match="No such path") as err:
            load_model(str(spec))
        assert where in str(err.value) and "Unknown model" not in str(err.value)
    with pytest.raises(vitkit.UnknownModelError, match="Did you mean: vit_base_patch16"):  # a paper-style name
        load_model("ViT-B/16")
    with pytest.raises(vitkit.UnknownModelError, match="Did you mean: vit_tiny_patch16_224"):  # a typo
        load_model("vit_tiny_patch16_244")
