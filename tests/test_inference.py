"""optimize_for_inference: the path `auto` picks per device, the caller's model untouched, accuracy floors."""

from __future__ import annotations

import logging

import pytest
import torch

import vitkit
from vitkit.errors import ConfigError
from vitkit.inference import CpuCapability, choose_path, optimize_for_inference

AVX2 = CpuCapability(isa="AVX2", native_bf16=False, vnni=False)
AVX512_BF16 = CpuCapability(isa="AVX512", native_bf16=True, vnni=True)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0))


# ------------------------------------------------------------------------------------------- decision logic
@pytest.mark.parametrize("ort", [True, False])
def test_auto_on_avx2_never_picks_bf16(ort):
    plan = choose_path("cpu", "auto", "auto", cpu=AVX2, has_onnxruntime=ort)
    assert plan.precision == "fp32"
    assert plan.backend == ("onnxruntime" if ort else "eager")
    assert "no native bf16" in plan.reason


def test_auto_on_native_bf16_cpu_picks_bf16_eager():
    plan = choose_path("cpu", "auto", "auto", cpu=AVX512_BF16, has_onnxruntime=True)
    assert (plan.precision, plan.backend) == ("bf16", "eager")


@pytest.mark.parametrize("cpu", [AVX2, AVX512_BF16])
def test_int8_auto_backend_is_onnxruntime_when_installed(cpu):
    assert choose_path("cpu", "int8", "auto", cpu=cpu, has_onnxruntime=True).backend == "onnxruntime"
    assert choose_path("cpu", "int8", "auto", cpu=cpu, has_onnxruntime=False).backend == "eager"


@pytest.mark.parametrize("cuda_bf16, want", [(True, "bf16"), (False, "fp16")])
def test_auto_on_cuda_picks_half_precision_eager(cuda_bf16, want):
    plan = choose_path("cuda", "auto", "auto", cuda_bf16=cuda_bf16, has_onnxruntime=True)
    assert (plan.precision, plan.backend) == (want, "eager")
    assert choose_path("cuda", "fp16", "compile").backend == "compile"


@pytest.mark.parametrize("device, precision, backend, match", [
    ("cuda", "int8", "auto", "CPU only"),
    ("cuda", "fp32", "onnxruntime", "CPU only"),
    ("cpu", "fp16", "auto", "for CUDA"),
    ("cpu", "bf16", "onnxruntime", "does not run"),
    ("cpu", "int8", "compile", "does not run"),
    ("cpu", "fp8", "auto", "precision='fp8'"),
    ("cpu", "fp32", "tensorrt", "backend='tensorrt'"),
])
def test_impossible_combinations_are_config_errors(device, precision, backend, match):
    with pytest.raises(ConfigError, match=match):
        choose_path(device, precision, backend, cpu=AVX2, has_onnxruntime=True)


def test_detected_capability_is_torchs():
    cap = CpuCapability.detect()
    assert cap.isa == torch.backends.cpu.get_cpu_capability()
    assert cap.native_bf16 == (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


# ------------------------------------------------------------------------------------------- the runner
@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return vitkit.create_model("vit_small_patch16_224", depth=2, img_size=64)


@pytest.mark.parametrize("precision, backend", [("fp32", "eager"), ("int8", "eager"), ("bf16", "eager"),
                                                ("fp32", "onnxruntime"), ("int8", "onnxruntime")])
def test_caller_model_parameters_mode_and_device_unchanged(small, precision, backend):
    model = small.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runner = optimize_for_inference(model, precision=precision, backend=backend)
    x = torch.randn(2, 3, 64, 64)
    out = runner(x)
    assert out.shape == (2, 1000) and out.dtype == torch.float32 and out.device == x.device
    assert model.training and model.pos_embed.device.type == "cpu"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(type(m) is not torch.ao.nn.quantized.dynamic.Linear for m in model.modules())
    assert f"precision={precision!r}" in repr(runner) and f"backend={backend!r}" in repr(runner)
    model.eval()


def test_runner_takes_other_sizes_and_batches(small):
    runner = optimize_for_inference(small, backend="onnxruntime")
    for shape in [(1, 3, 64, 64), (3, 3, 48, 80)]:
        x = torch.randn(shape)
        with torch.no_grad():
            torch.testing.assert_close(runner(x), small.eval()(x), atol=1e-4, rtol=0)


def test_auto_says_what_it_chose(small, caplog):
    with caplog.at_level(logging.INFO, logger="vitkit.inference"):
        runner = optimize_for_inference(small, backend="auto")
    cap = CpuCapability.detect()
    assert runner.backend == "onnxruntime" and runner.precision == "fp32"
    assert "backend onnxruntime" in repr(runner) and "InferenceRunner" in caplog.text
    if not cap.native_bf16:
        assert optimize_for_inference(small, precision="auto").precision == "fp32"


def test_bf16_runs_bf16_weights_and_meets_its_floor(small):
    """bf16 floor on a small model in the default run (ViT-B/16 in bf16 is slow on a CPU without native bf16)."""
    runner = optimize_for_inference(small, precision="bf16", backend="eager")
    assert {p.dtype for p in runner.module.parameters()} == {torch.bfloat16}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert cosine(runner(x), small.eval()(x)) >= 0.999


def test_int8_eager_uses_quantized_linears(small):
    runner = optimize_for_inference(small, precision="int8", backend="eager")
    kinds = {type(m).__name__ for m in runner.module.modules()}
    assert "Linear" in kinds and not any(type(m) is torch.nn.Linear for m in runner.module.modules())


# ------------------------------------------------------------------------------------------- accuracy floors
@pytest.fixture(scope="module")
def vit_b():
    torch.manual_seed(0)
    model = vitkit.create_model("vit_base_patch16_224").eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        return model, x, model(x)


FLOORS = {"fp32": 0.9999, "bf16": 0.999, "int8": 0.99}


@pytest.mark.parametrize("precision, backend", [("fp32", "eager"), ("int8", "eager")])
def test_vit_b16_floors(vit_b, precision, backend):
    model, x, want = vit_b
    assert cosine(optimize_for_inference(model, precision=precision, backend=backend)(x), want) >= FLOORS[precision]


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_vit_b16_onnxruntime_floors(vit_b, precision):
    """Slow: exporting and quantizing ViT-B/16's 350 MB graph takes tens of seconds (the small model below
    covers the same paths in the default run)."""
    model, x, want = vit_b
    assert cosine(optimize_for_inference(model, precision=precision, backend="onnxruntime")(x), want) \
        >= FLOORS[precision]


@pytest.mark.parametrize("precision, backend", [("fp32", "onnxruntime"), ("int8", "onnxruntime"), ("bf16", "eager"),
                                                ("fp32", "eager"), ("int8", "eager")])
def test_small_model_floors(small, precision, backend):
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        want = small.eval()(x)
    assert cosine(optimize_for_inference(small, precision=precision, backend=backend)(x), want) >= FLOORS[precision]


@pytest.mark.slow
def test_vit_b16_bf16_floor(vit_b):
    """Slow on a CPU without native bf16 (emulated bf16 GEMMs): batch 1."""
    model, x, want = vit_b
    assert cosine(optimize_for_inference(model, precision="bf16", backend="eager")(x[:1]), want[:1]) >= 0.999


@pytest.mark.slow
def test_compile_backend_matches_eager(small):
    runner = optimize_for_inference(small, precision="fp32", backend="compile")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert cosine(runner(x), small.eval()(x)) >= 0.9999


# ------------------------------------------------------------------------------------------- digits model
@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A digits model trained by vitkit.train with the training tests' tiny settings, and its held-out images."""
    from test_train_common import TINY
    from vitkit.data.datasets import load_splits
    from vitkit.processor import ImageProcessor

    out = tmp_path_factory.mktemp("digits")
    vitkit.train(**TINY, epochs=4, deterministic=True, out=str(out), threads=1)
    model = vitkit.from_pretrained(out / "best").eval()
    val = load_splits(None).val
    processor = ImageProcessor.from_model(model)
    x = torch.stack([processor.preprocess_one(val.load(i)) for i in range(len(val))])
    return model, x, torch.tensor(val.labels)


#: a fp32 top-1 logit this far ahead of the runner-up is a clear answer, which bf16 and int8 must keep (their
#: rounding moves logits by at most ~0.11 here, so a flip needs a margin under ~0.22; closer calls are near-ties
#: that may flip on any CPU's kernels, AVX2, AVX-512 or AVX-512-BF16)
CLEAR_MARGIN = 0.25


def test_digits_bf16_and_int8_keep_every_clear_answer_of_fp32(digits):
    model, x, labels = digits
    with torch.no_grad():
        ref = model(x).float()  # (N, classes)
    top2 = ref.topk(2, dim=-1).values
    clear = (top2[:, 0] - top2[:, 1]) > CLEAR_MARGIN
    want = ref.argmax(-1)
    assert float((want == labels).float().mean()) > 0.5  # 5x chance after 4 tiny epochs: a model that learned
    assert clear.float().mean() > 0.5, float(clear.float().mean())  # most answers are clear: the check has teeth
    for precision, backend in [("bf16", "eager"), ("int8", "eager"), ("int8", "onnxruntime")]:
        got = optimize_for_inference(model, precision=precision, backend=backend)(x).float().argmax(-1)
        kept = got[clear] == want[clear]
        assert bool(kept.all()), (precision, backend, int((~kept).sum()), int(clear.sum()))
        assert float((got == want).float().mean()) >= 0.97, (precision, backend)  # near-ties: a few may flip
