"""--precision / --backend on predict: the same answers through a faster path, and the CLI says which ran."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

import vitkit
from vitkit.cli import main
from vitkit.predict import predict


@pytest.fixture(scope="module")
def photo_files(photos, tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("photos")
    for name in ("chelsea", "coffee", "astronaut"):
        Image.fromarray(photos[name]).save(folder / f"{name}.png")
    return sorted(str(p) for p in folder.glob("*.png"))


@pytest.mark.parametrize("precision, backend", [("fp32", "onnxruntime"), ("int8", "eager"), ("fp32", "auto")])
def test_predict_paths_give_the_same_probabilities(photo_files, precision, backend):
    torch.manual_seed(0)
    model = vitkit.create_model("vit_digits")
    want = predict(photo_files, model, top_k=3)
    got = predict(photo_files, model, top_k=3, precision=precision, backend=backend)
    tol = 1e-5 if precision == "fp32" else 2e-2
    for w, g in zip(want, got):
        assert [p.index for p in g.top_k][:1] == [p.index for p in w.top_k][:1]
        assert [p.probability for p in g.top_k] == pytest.approx([p.probability for p in w.top_k], abs=tol)
    assert not any(type(m).__module__.startswith("torch.ao") for m in model.modules())  # model untouched


def test_predict_cli_says_which_path_ran(photo_files, capsys):
    assert main(["predict", photo_files[0], "--model", "vit_digits", "--precision", "fp32", "--backend", "auto",
                 "--json"]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)[0]["predictions"]) == 5
    assert "inference path: precision fp32: as asked; backend onnxruntime" in captured.err
    assert main(["predict", photo_files[0], "--model", "vit_digits", "--precision", "fp16"]) == 2
    assert "for CUDA" in capsys.readouterr().err


def test_features_in_int8_and_bf16_stay_close_to_fp32(tmp_path):
    """`vitkit features --precision`: a converted copy computes the features; cosine floors as for outputs."""
    import numpy as np
    from PIL import Image

    import vitkit
    from vitkit.features import extract_features

    model = vitkit.create_model("vit_digits", depth=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = [Image.fromarray((np.random.rand(40, 40, 3) * 255).astype(np.uint8)) for _ in range(4)]
    ref = extract_features(images, model).features
    for precision, floor in (("int8", 0.99), ("bf16", 0.999)):
        got = extract_features(images, model, precision=precision, layers=[-1]).features[:, 0]
        want = extract_features(images, model, layers=[-1]).features[:, 0]
        cos = (got * want).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(want, axis=-1))
        assert cos.min() >= floor, (precision, cos)
        assert not np.array_equal(got, want)  # it really ran another precision
    assert ref.shape == (4, 96)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the caller's model untouched
    with pytest.raises(vitkit.ConfigError, match="precision='fp8'"):
        extract_features(images, model, precision="fp8")
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, img in enumerate(images):
        img.save(folder / f"{i}.png")
    saved = vitkit.save_pretrained(model, tmp_path / "m")
    assert main(["features", str(folder), "--model", str(saved), "--out", str(tmp_path / "f.npy"),
                 "--precision", "int8", "--workers", "0"]) == 0
    assert np.load(tmp_path / "f.npy").shape == (4, 96)
