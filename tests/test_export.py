"""Export: ONNX and torch.export files take any batch and input size and match eager fp32 PyTorch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import vitkit
from vitkit.cli import main
from vitkit.errors import ConfigError, VitkitError
from vitkit.export import example_input, export_model, export_onnx, export_program, export_torch, onnx_session


@pytest.fixture(scope="module")
def tiny224():
    """A one-block ViT-Ti at 224 (the issue's sizes: exported at 224, run at 160x224 and 384x384)."""
    torch.manual_seed(0)
    return vitkit.create_model("vit_tiny_patch16_224", depth=1).eval()


def _eager(model, x):
    with torch.no_grad():
        return model(x)


def test_onnx_has_dynamic_batch_height_width(tiny224, tmp_path):
    result = export_onnx(tiny224, tmp_path / "m.onnx")
    assert set(result.checks) == {(224, 224), (160, 224), (384, 384)}
    assert result.max_abs_diff <= 1e-4, result.checks
    session = onnx_session(result.path)
    for shape in [(3, 3, 160, 224), (1, 3, 384, 384), (2, 3, 224, 224)]:
        x = torch.randn(shape)
        got = session.run(None, {"pixel_values": x.numpy()})[0]
        np.testing.assert_allclose(got, _eager(tiny224, x).numpy(), atol=1e-4, rtol=0)
    dims = [d.dim_param or d.dim_value for d in onnx.load(result.path).graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert not list(tmp_path.glob("*.tmp"))


def test_onnx_int8_uses_integer_matmuls_and_stays_close(tiny224, tmp_path):
    result = export_onnx(tiny224, tmp_path / "q.onnx", precision="int8", verify=False)
    ops = {n.op_type for n in onnx.load(result.path).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul"}, ops
    assert "DynamicQuantizeLinear" in ops
    x = torch.randn(2, 3, 160, 224)
    got = torch.from_numpy(onnx_session(result.path).run(None, {"pixel_values": x.numpy()})[0])
    want = _eager(tiny224, x)
    assert torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0) >= 0.99


def test_torch_export_program_has_dynamic_sizes(tiny224, tmp_path):
    result = export_torch(tiny224, tmp_path / "m.pt2")
    assert result.format == "torch-export" and result.max_abs_diff <= 1e-4, result.checks
    loaded = torch.export.load(str(result.path)).module()
    for shape in [(3, 3, 160, 224), (1, 3, 224, 224)]:
        x = torch.randn(shape)
        torch.testing.assert_close(loaded(x), _eager(tiny224, x), atol=1e-4, rtol=0)


def test_torch_export_bf16_has_bf16_weights(tiny224):
    program = export_program(tiny224, precision="bf16")
    dtypes = {t.dtype for t in program.state_dict.values() if t.is_floating_point()}
    assert dtypes == {torch.bfloat16}
    x = torch.randn(1, 3, 160, 224)
    got = program.module()(x)
    assert got.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(got.flatten(), _eager(tiny224, x).flatten(), dim=0) >= 0.999
    assert tiny224.pos_embed.dtype == torch.float32  # the caller's model is untouched


def test_export_leaves_a_training_model_in_training_mode(tmp_path):
    model = vitkit.create_model("vit_tiny_patch16_224", depth=1, img_size=32).train()
    for verify in (False, True):
        export_onnx(model, tmp_path / f"m{verify}.onnx", verify=verify)
        assert model.training, f"export with verify={verify} switched the model to eval mode"


def test_example_input_follows_the_model_device_and_dtype():
    """Issue 8: the export input was built on the CPU in fp32, so a GPU (or bf16) model failed to export."""
    model = vitkit.create_model("vit_tiny_patch16_224", depth=1, img_size=32)
    assert example_input(model.to(torch.bfloat16), 2).dtype == torch.bfloat16
    meta = example_input(model.to("meta"), 2)  # stands in for a CUDA model here: same code path, no GPU needed
    assert meta.device.type == "meta" and meta.shape == (2, 3, 32, 32)


def test_a_bf16_model_exports_and_keeps_its_dtype(tmp_path):
    model = vitkit.create_model("vit_tiny_patch16_224", depth=1, img_size=32).to(torch.bfloat16)
    result = export_onnx(model, tmp_path / "m.onnx")
    assert result.max_abs_diff <= 1e-4
    assert model.pos_embed.dtype == torch.bfloat16


class _BuggyViT(vitkit.VisionTransformer):
    def forward(self, x):
        raise RuntimeError("a bug inside forward")


def test_export_bugs_propagate_user_errors_are_vitkit_errors(tmp_path):
    """Issue 8: every exception became a VitkitError, hiding bugs; only user-caused ones are wrapped."""
    buggy = _BuggyViT(vitkit.get_entry("vit_tiny_patch16_224").build_config().replace(depth=1, img_size=32))
    with pytest.raises(RuntimeError, match="a bug inside forward") as info:
        export_onnx(buggy, tmp_path / "b.onnx")
    assert not isinstance(info.value, VitkitError)
    model = vitkit.create_model("vit_tiny_patch16_224", depth=1, img_size=32)
    (tmp_path / "file").write_text("x")
    with pytest.raises(VitkitError, match="cannot be used|Cannot write"):
        export_onnx(model, tmp_path / "file" / "m.onnx", verify=False)  # the parent is a file
    with pytest.raises(ConfigError, match="onnx precision"):
        export_model(model, tmp_path / "m.onnx", precision="bf16")
    assert not list(tmp_path.glob("*.onnx"))


def test_export_cli(tmp_path, capsys):
    assert main(["export", "vit_tiny_patch16_224", "--img-size", "32", "--out", str(tmp_path / "t.onnx")]) == 0
    assert "48x48: max abs diff" in capsys.readouterr().out
    assert (tmp_path / "t.onnx").stat().st_size > 1000
    assert main(["export", "vit_tiny_patch16_224", "--img-size", "32", "--out", str(tmp_path / "t.pt2"),
                 "--precision", "bf16", "--no-verify"]) == 0
    assert "torch-export, bf16" in capsys.readouterr().out
    assert main(["export", "vit_tiny_patch_16", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "Did you mean" in capsys.readouterr().err
    assert main(["export", "vit_tiny_patch16_224", "--out", str(tmp_path / "x.onnx"), "--precision", "bf16"]) == 2


@pytest.mark.parametrize("name", ["vit_small_patch16_dinov3_qkvb", "vit_small_plus_patch16_dinov3",
                                  "eva02_tiny_patch14_224", "vit_pe_core_tiny_patch16_384"])
def test_a_rotary_model_exports_with_its_tables_computed_for_each_input_size(name, tmp_path):
    """Rotary tables are computed in the graph from the input's grid (no fixed-size constant), for DINOv3, EVA-02
    (on top of a resampled position embedding) and Perception Encoder: the ONNX file runs at 224x224 and a
    non-square size within 1e-4 of eager (of the output's scale where it passes 1), and optimize_for_inference's
    ONNX Runtime path does too."""
    from _text_refs import redraw

    ort = pytest.importorskip("onnxruntime")
    model = vitkit.create_model(name, depth=2).eval()
    redraw(model)
    export_onnx(model, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    runner = vitkit.optimize_for_inference(model, precision="fp32", backend="onnxruntime")
    for size in ((224, 224), (10 * model.config.patch_size[0], 224)):  # 160x224 at patch 16, 140x224 at 14
        x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(size[0]))
        with torch.no_grad():
            want = model(x)
        got = torch.from_numpy(session.run(None, {"pixel_values": x.numpy()})[0])
        tol = 1e-4 * max(1.0, float(want.abs().max()))  # 1e-4 of the output's scale (PE's pooled head: ~100)
        assert (got - want).abs().max() < tol, size
        assert (runner(x) - want).abs().max() < tol, size


def test_rotary_models_are_refused_for_transformers_with_their_reason(tmp_path):
    """EVA-02's rotary form has no transformers class (DINOv3's is written as DINOv3ViTModel: test_zoo_hf.py)."""
    from vitkit.errors import CheckpointError

    with pytest.raises(CheckpointError, match="rotary embeddings"):
        vitkit.save_pretrained(vitkit.create_model("eva02_tiny_patch14_224", depth=1), tmp_path / "x", format="hf")


def test_a_graph_that_does_not_run_at_a_size_is_one_export_error():
    """A runtime failing on the exported graph (its own exception type) is an ExportError naming the model and the
    input, not the runtime's traceback."""
    from vitkit.errors import ExportError
    from vitkit.export import _verify

    class RuntimeFailError(Exception):  # as onnxruntime's pybind exceptions: not a VitkitError
        pass

    def run(x):
        raise RuntimeFailError("[ONNXRuntimeError] : 1 : FAIL : Reshape node\nThe input tensor cannot be reshaped")

    model = vitkit.create_model("vit_tiny_patch16_224", depth=1, img_size=32).eval()
    with pytest.raises(ExportError, match=r"'vit_tiny_patch16_224' does not run at input \(2, 3, 32, 32\) "
                                          r"\(The input tensor cannot be reshaped\)"):
        _verify(run, model, 2)


@pytest.mark.parametrize("name", ["eva02_tiny_patch14_224", "vit_small_patch16_dinov3"])
def test_int8_onnx_runtime_runs_a_rotary_model_at_two_sizes(name):
    pytest.importorskip("onnxruntime")
    model = vitkit.create_model(name, depth=2).eval()
    runner = vitkit.optimize_for_inference(model, precision="int8", backend="onnxruntime")
    for size in ((224, 224), (10 * model.config.patch_size[0], 224)):
        x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(size[0]))
        with torch.no_grad():
            want = model(x)
        cos = torch.nn.functional.cosine_similarity(runner(x).flatten(), want.flatten(), dim=0)
        assert float(cos) >= 0.99, size
