"""ONNX export: the file runs in ONNX Runtime with a dynamic batch and matches PyTorch."""

from __future__ import annotations

import numpy as np
import torch

import vitkit
from vitkit.cli import main
from vitkit.export import export_onnx, onnx_session


def test_export_onnx_matches_pytorch_with_dynamic_batch(tmp_path):
    model = vitkit.create_model("deit_tiny_distilled_patch16_224", depth=2, img_size=64).eval()
    result = export_onnx(model, tmp_path / "m.onnx")
    assert result.path.exists() and result.max_abs_diff is not None and result.max_abs_diff < 1e-4
    x = torch.randn(5, 3, 64, 64)
    got = onnx_session(result.path).run(None, {"pixel_values": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-4, rtol=0)
    assert not list(tmp_path.glob("*.tmp"))



def test_export_leaves_a_training_model_in_training_mode(tmp_path):
    model = vitkit.create_model("vit_tiny_patch16_224", depth=1, img_size=32).train()
    for verify in (False, True):
        export_onnx(model, tmp_path / f"m{verify}.onnx", verify=verify)
        assert model.training, f"export with verify={verify} switched the model to eval mode"


def test_export_cli(tmp_path, capsys):
    assert main(["export", "vit_tiny_patch16_224", "--img-size", "32", "--out", str(tmp_path / "t.onnx"),
                 "--no-verify"]) == 0
    assert (tmp_path / "t.onnx").stat().st_size > 1000
    assert main(["export", "vit_tiny_patch_16", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "Did you mean" in capsys.readouterr().err
