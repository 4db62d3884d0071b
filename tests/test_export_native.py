"""ONNX graphs of padded patch sequences (images at their own aspect ratio): inputs patches, mask and grids with
dynamic batch and length, position embeddings resampled in the graph, equal to eager PyTorch (1e-4)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import vitkit
from test_weights_refs import randomize
from vitkit.cli import main
from vitkit.errors import ConfigError, ExportError
from vitkit.export import NATIVE_TRACE_ASPECTS, example_patches, export_model, export_onnx, onnx_session, patch_feeds
from vitkit.patches import PatchProcessor
from vitkit.posemb import RESAMPLE_STYLES, _interpolate, resize_weights
from vitkit.processor import sample_photos

ONNX_TOL = 1e-4


@pytest.mark.parametrize("style", sorted(RESAMPLE_STYLES))
def test_resize_weights_are_torchs_resize_for_every_style(style: str) -> None:
    """Shrinking and growing, odd and even sizes: the graph's weights are F.interpolate's (float32 rounding)."""
    for n_in in (1, 2, 5, 16):
        for n_out in (1, 3, 7, 16, 23):
            # resizing the identity's columns gives the resize matrix (n_in, n_out)
            want = _interpolate(torch.eye(n_in)[None, None], (n_in, n_out), style)[0, 0].T
            got = resize_weights(n_in, torch.tensor(n_out), torch.arange(n_out), style)
            torch.testing.assert_close(got, want, atol=2e-6, rtol=0)


def _tiny(**kwargs):
    return randomize(vitkit.VisionTransformer(img_size=64, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                                              num_classes=5, **kwargs))


@pytest.mark.parametrize("kwargs", [dict(posemb_resample="siglip2", global_pool="map", class_token=False),
                                    dict(), dict(posemb_resample="hf", reg_tokens=2), dict(posemb="sincos2d")],
                         ids=["siglip2-map", "timm-bicubic-aa", "hf-bicubic-registers", "sincos2d"])
def test_one_graph_serves_every_grid_and_length_batched(kwargs, tmp_path) -> None:
    model = _tiny(**kwargs).train()
    result = export_onnx(model, tmp_path / "n.onnx", max_patches=32)
    assert model.training  # the caller's model keeps its mode
    traced = set(map(tuple, example_patches(model, 32, aspects=NATIVE_TRACE_ASPECTS).grids.tolist()))
    assert len(result.checks) == 3 and not traced & set(result.checks)  # verified on grids it was not traced on
    assert result.max_abs_diff <= ONNX_TOL, result.checks
    graph = onnx.load(result.path).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert dims == {"patches": ["batch", "num_patches", 192], "mask": ["batch", "num_patches"], "grids": ["batch", 2]}
    session = onnx_session(result.path)
    model.eval()
    for budget, pad_to in ((20, "budget"), (48, "longest"), (100, "longest")):  # fewer and more than its 64
        batch = PatchProcessor.from_model(model, max_num_patches=budget, pad_to=pad_to)(list(sample_photos()))
        assert len(set(map(tuple, batch.grids.tolist()))) >= 2
        with torch.no_grad():
            want = model(batch)
        got = session.run(None, patch_feeds(batch))[0]
        np.testing.assert_allclose(got, want.numpy(), atol=ONNX_TOL, rtol=0)
        alone = session.run(None, patch_feeds(batch.select(2).chunk(1)[0]))[0]  # one image, its own length
        np.testing.assert_allclose(alone[0], want[2].numpy(), atol=ONNX_TOL, rtol=0)


def test_optimize_for_inference_runs_patch_batches_through_the_masked_graph(monkeypatch) -> None:
    import vitkit.inference as inference

    def per_grid(*args, **kwargs):
        raise AssertionError("ONNX Runtime should take the patch batch in one call")

    monkeypatch.setattr(inference, "run_by_grid", per_grid)
    model = _tiny(posemb_resample="siglip2")
    runner = vitkit.optimize_for_inference(model, "fp32", "onnxruntime", native=True)
    batch = PatchProcessor.from_model(model, max_num_patches=30, pad_to="longest")(list(sample_photos()))
    with torch.no_grad():
        torch.testing.assert_close(runner(batch), model(batch), atol=ONNX_TOL, rtol=0)
    eager = vitkit.optimize_for_inference(model, "fp32", "eager", native=True)
    with torch.no_grad():
        torch.testing.assert_close(eager(batch), model(batch), atol=1e-5, rtol=1e-5)


def test_native_export_refuses_what_it_cannot_write(tmp_path) -> None:
    with pytest.raises(ConfigError, match="max_patches=0 is not allowed"):
        export_onnx(_tiny(), tmp_path / "a.onnx", max_patches=0)
    with pytest.raises(ConfigError, match="written as ONNX only"):
        export_model(_tiny(), tmp_path / "a.pt2", max_patches=16)
    with pytest.raises(ConfigError, match="square patches; this model's are 8x4"):
        export_onnx(vitkit.VisionTransformer(img_size=32, patch_size=(8, 4), embed_dim=32, depth=1, num_heads=2),
                    tmp_path / "a.onnx", max_patches=16)
    rotary = vitkit.VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, rope="eva",
                                      posemb="none")
    with pytest.raises(ExportError, match="rotary position embeddings"):
        export_onnx(rotary, tmp_path / "a.onnx", max_patches=16)
    assert not list(tmp_path.iterdir())


def test_export_cli_max_patches(tmp_path, capsys) -> None:
    out = tmp_path / "digits.onnx"
    assert main(["export", "vit_digits", "--out", str(out), "--max-patches", "16"]) == 0
    printed = capsys.readouterr().out
    assert "inputs patches (2, 16, 192), mask, grids" in printed and printed.count("  grid ") == 3
    assert [i.name for i in onnx.load(out).graph.input] == ["patches", "mask", "grids"]
    with pytest.raises(SystemExit) as exited:
        main(["export", "vit_digits", "--out", str(out), "--max-patches", "0"])
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and len(err.splitlines()) == 1
    assert "0 is not allowed for --max-patches: expected a positive integer" in err
