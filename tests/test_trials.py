"""backend='auto' by measurement: the trial's choice, its accuracy floors, the cache of winners; OpenVINO paths."""

from __future__ import annotations

import json
import logging

import pytest
import torch

import vitkit
from vitkit.inference import choose_path, optimize_for_inference
from vitkit.openvino_runtime import calibration_batches, default_calibration_images, openvino_available
from vitkit.trials import PathCache, cache_key, model_fingerprint, run_trial

needs_openvino = pytest.mark.skipif(not openvino_available(), reason="openvino is not installed")


class FakeClock:
    """A timer whose readings advance by each runner's declared cost, so the trial is deterministic."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def runner(self, cost: float, out: torch.Tensor):
        def run(x: torch.Tensor) -> torch.Tensor:
            self.now += cost
            return out
        return run


def test_the_fastest_path_within_its_floor_wins():
    clock, ref = FakeClock(), torch.tensor([1.0, 2.0, 3.0])
    bad = torch.tensor([3.0, -2.0, 1.0])  # cosine far below any floor

    def broken(x):
        raise RuntimeError("no kernel")

    candidates = {"slow": clock.runner(3.0, ref), "fast": clock.runner(1.0, ref * 1.0001),
                  "fastest_but_wrong": clock.runner(0.1, bad), "broken": broken}
    result = run_trial(candidates, torch.zeros(1), ref, dict.fromkeys(candidates, 0.999), rounds=3, timer=clock)
    assert result.winner == "fast" and set(result.seconds) == {"slow", "fast"}
    assert result.seconds == {"slow": 3.0, "fast": 1.0} and result.cosines["broken"] is None
    assert "below the accuracy floor: fastest_but_wrong, broken" in result.describe(8)
    with pytest.raises(RuntimeError, match="accuracy floor"):
        run_trial({"wrong": clock.runner(1.0, bad)}, torch.zeros(1), ref, {"wrong": 0.99}, timer=clock)


def test_the_cache_survives_damage_and_keys_follow_the_weights(tmp_path, caplog):
    cache = PathCache(tmp_path)
    assert cache.get("k") is None
    cache.put("k", {"precision": "fp32", "backend": "onnxruntime", "reason": "r"})
    assert PathCache(tmp_path).get("k")["backend"] == "onnxruntime"
    cache.path.write_text('{"k": {"precision": 3}}')
    assert cache.get("k") is None
    cache.path.write_bytes(b"\xff\xfe not json")
    assert cache.get("k") is None and "unreadable" in caplog.text
    cache.put("k2", {"precision": "int8", "backend": "openvino"})  # rewritten whole
    assert json.loads(cache.path.read_text()) == {"k2": {"precision": "int8", "backend": "openvino"}}
    a, b = vitkit.create_model("vit_digits"), vitkit.create_model("vit_digits")
    b.load_state_dict(a.state_dict())
    assert model_fingerprint(a) == model_fingerprint(b)
    with torch.no_grad():
        b.head.bias[3] += 1.0
    assert model_fingerprint(a) != model_fingerprint(b)
    assert cache_key("f", cpu="AVX2", threads=2, batch=8, precision="int8") != cache_key(
        "f", cpu="AVX2", threads=2, batch=1, precision="int8")


def test_auto_measures_once_then_starts_from_the_cache(tmp_path, monkeypatch):
    model = vitkit.create_model("vit_digits").eval()
    runner = optimize_for_inference(model, "fp32", "auto", trial=True, batch_size=2, cache_dir=tmp_path)
    assert runner.backend in ("eager", "onnxruntime", "openvino") and "measured at batch 2" in repr(runner)
    monkeypatch.setattr("vitkit.inference.run_trial", lambda *a, **k: pytest.fail("measured again"))
    again = optimize_for_inference(model, "fp32", "auto", trial=True, batch_size=2, cache_dir=tmp_path)
    assert again.backend == runner.backend and "cached in" in repr(again)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x), atol=1e-4, rtol=0)
    static = optimize_for_inference(model, "fp32", "auto", cache_dir=tmp_path)  # VITKIT_AUTO_TRIAL=0 here
    assert "measured" not in repr(static)


def test_static_rule_with_openvino():
    from vitkit.inference import CpuCapability

    zen5 = CpuCapability("AVX512", native_bf16=True, vnni=True)
    kw = dict(cpu=zen5, has_onnxruntime=True, has_openvino=True)
    assert choose_path("cpu", "int8", "auto", **kw).backend == "openvino"
    assert choose_path("cpu", "auto", "auto", **kw).backend == "openvino"  # bf16 on native bf16
    assert choose_path("cpu", "fp32", "auto", **kw).backend == "onnxruntime"
    with pytest.raises(vitkit.ConfigError, match="CPU only"):
        choose_path("cuda", "fp32", "openvino")
    with pytest.raises(vitkit.ConfigError, match="does not run"):
        choose_path("cpu", "fp16", "openvino")


@needs_openvino
def test_openvino_paths_meet_their_floors_at_two_sizes():
    model = vitkit.create_model("vit_digits").eval()
    photos = default_calibration_images(6)
    x = vitkit.ImageProcessor.from_model(model)(photos)
    with torch.no_grad():
        ref = model(x)
    fp32 = optimize_for_inference(model, "fp32", "openvino")
    torch.testing.assert_close(fp32(x), ref, atol=1e-4, rtol=0)
    wide = torch.randn(2, 3, 32, 48)  # the position table resized in the graph: OpenVINO's own antialiased Resize
    with torch.no_grad():
        torch.testing.assert_close(fp32(wide), model(wide), atol=1e-3, rtol=0)
    cos = lambda a, b: float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))  # noqa: E731
    assert cos(optimize_for_inference(model, "bf16", "openvino")(x), ref) >= 0.999
    import nncf  # noqa: F401  (its logger is set up at import)

    nncf_logger = logging.getLogger("nncf")
    caller_handler = logging.NullHandler(logging.DEBUG)  # e.g. pytest's capture handler, on NNCF's logger
    nncf_logger.addHandler(caller_handler)
    level = nncf_logger.level
    try:
        int8 = optimize_for_inference(model, "int8", "openvino", calibration=calibration_batches(model, photos))
    finally:
        nncf_logger.removeHandler(caller_handler)
    assert cos(int8(x), ref) >= 0.99
    assert (caller_handler.level, nncf_logger.level) == (logging.DEBUG, level)  # quieted while quantizing only
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # the caller's model untouched


@needs_openvino
def test_throughput_mode_splits_the_batch_over_streams_and_auto_times_it(tmp_path, monkeypatch):
    """mode='throughput' runs the batch as one request per stream, at once, with the same numbers as one request;
    with no mode asked for, auto's trial at a batch of more than one image times it beside the latency path."""
    model = vitkit.create_model("vit_digits").eval()
    x = vitkit.ImageProcessor.from_model(model)(default_calibration_images(5))
    latency = optimize_for_inference(model, "fp32", "openvino", mode="latency")
    streams = optimize_for_inference(model, "fp32", "openvino", mode="throughput")
    torch.testing.assert_close(streams(x), latency(x), atol=1e-5, rtol=0)
    assert streams(x[:1]).shape == latency(x[:1]).shape
    from vitkit import inference

    seen = {}

    def trial(candidates, *args, **kwargs):
        seen.update(candidates)
        return run_trial(candidates, *args, **kwargs)

    monkeypatch.setattr(inference, "run_trial", trial)
    runner = optimize_for_inference(model, "int8", "auto", trial=True, batch_size=4, cache_dir=tmp_path)
    assert {"openvino", "openvino (throughput streams)", "eager"} <= set(seen)
    mode = json.loads((tmp_path / "inference_paths.json").read_text()).popitem()[1]["mode"]
    assert (mode == "throughput") == ("backend openvino (throughput streams):" in repr(runner))
    seen.clear()
    optimize_for_inference(model, "int8", "auto", trial=True, batch_size=1, cache_dir=tmp_path / "one")
    assert "openvino (throughput streams)" not in seen  # one image: nothing to split
    with pytest.raises(vitkit.ConfigError, match="mode='fast' is not supported"):
        optimize_for_inference(model, "fp32", "openvino", mode="fast")


def test_a_quick_path_is_timed_for_longer_than_a_slow_one():
    """The trial runs more rounds while its timed calls stay under the budget (a batch of one image), at least
    ``rounds`` of them, and never more than ``max_rounds``."""
    clock, ref = FakeClock(), torch.tensor([1.0, 2.0])
    quick = {"a": clock.runner(0.1, ref), "b": clock.runner(0.12, ref)}
    result = run_trial(quick, torch.zeros(1), ref, dict.fromkeys(quick, 0.99), rounds=3, budget_s=2.2, timer=clock)
    assert result.rounds == 10 and result.winner == "a" and "(10 rounds)" in result.describe(1)
    slow = {"a": clock.runner(2.0, ref), "b": clock.runner(3.0, ref)}
    assert run_trial(slow, torch.zeros(1), ref, dict.fromkeys(slow, 0.99), rounds=3, budget_s=2.2,
                     timer=clock).rounds == 3
    capped = run_trial(quick, torch.zeros(1), ref, dict.fromkeys(quick, 0.99), budget_s=100.0, max_rounds=7,
                       timer=clock)
    assert capped.rounds == 7


@needs_openvino
def test_int8_with_f32_activations_is_a_trial_path_where_bf16_is_native(tmp_path, monkeypatch):
    """On a CPU with native bf16 the int8 trial also times OpenVINO with the ops between the integer GEMMs in f32
    (its compile hint says so), sharing one NNCF quantization with the default compile; the winner's setting is
    cached and used again. Without native bf16 the two compiles are the same, and only one is timed."""
    from vitkit import inference, openvino_runtime
    from vitkit.inference import CpuCapability

    model = vitkit.create_model("vit_digits").eval()
    quantized = openvino_runtime.to_openvino(model, precision="int8")
    assert openvino_runtime.compile_openvino(quantized, precision="int8", activations="f32").get_property(
        "INFERENCE_PRECISION_HINT").to_string() == "f32"
    with pytest.raises(vitkit.ConfigError, match="activations='fp8' is not supported"):
        openvino_runtime.compile_openvino(quantized, precision="int8", activations="fp8")

    conversions, seen, built = [], {}, []
    real_to_openvino, real_runner = inference.to_openvino, inference.openvino_runner
    monkeypatch.setattr(inference, "to_openvino", lambda *a, **k: conversions.append(k) or real_to_openvino(*a, **k))
    monkeypatch.setattr(inference, "openvino_runner",
                        lambda *a, **k: built.append(k["activations"]) or real_runner(*a, **k))
    def f32_wins(candidates, *args, **kwargs):  # the trial's choice forced, to follow it into the cache
        seen.update(candidates)
        result = run_trial(candidates, *args, **kwargs)
        result.winner = "openvino (f32 activations)"
        return result

    monkeypatch.setattr(inference, "run_trial", f32_wins)
    bf16_cpu = CpuCapability(isa="AVX512", native_bf16=True, vnni=True)
    monkeypatch.setattr(CpuCapability, "detect", classmethod(lambda cls: bf16_cpu))
    runner = optimize_for_inference(model, "int8", "auto", trial=True, batch_size=1, cache_dir=tmp_path)
    assert {"openvino", "openvino (f32 activations)"} <= set(seen) and len(conversions) == 1
    assert "backend openvino (f32 activations):" in repr(runner)
    entry = json.loads((tmp_path / "inference_paths.json").read_text()).popitem()[1]
    assert (entry["backend"], entry["activations"]) == ("openvino", "f32")
    built.clear()
    optimize_for_inference(model, "int8", "auto", trial=True, batch_size=1, cache_dir=tmp_path)
    assert built == ["f32"]  # the cached winner is built as it was timed
    monkeypatch.setattr(inference, "run_trial", lambda c, *a, **k: seen.update(c) or run_trial(c, *a, **k))
    seen.clear()
    avx2 = CpuCapability(isa="AVX2", native_bf16=False, vnni=False)
    monkeypatch.setattr(CpuCapability, "detect", classmethod(lambda cls: avx2))
    optimize_for_inference(model, "int8", "auto", trial=True, batch_size=1, cache_dir=tmp_path / "avx2")
    assert "openvino" in seen and "openvino (f32 activations)" not in seen
