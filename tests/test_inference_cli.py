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
    assert main(["predict", photo_files[0], "--model", "vit_digits", "--precision", "int8", "--backend", "auto",
                 "--json"]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)[0]["predictions"]) == 5
    assert "inference path: precision int8: as asked; backend onnxruntime" in captured.err
    assert main(["predict", photo_files[0], "--model", "vit_digits", "--precision", "fp16"]) == 2
    assert "for CUDA" in capsys.readouterr().err
