"""Fast inference: one entry point that picks precision and runtime for the device it runs on.

``optimize_for_inference(model, precision, backend)`` returns a callable from a (B, 3, H, W) float tensor
to the model's output on the model's device. It works on a copy: the caller's model keeps its
parameters, mode and device. ``backend='auto'`` decides from the device and, on a CPU, from the
instruction set that torch detects (``CpuCapability.detect``); the decision is a pure function
(``choose_path``) so it can be tested for machines other than the one the tests run on.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .choices import INFERENCE_BACKENDS, INFERENCE_PRECISIONS
from .errors import ConfigError
from .export import convert_precision, export_onnx, export_onnx_native, onnx_session, patch_feeds
from .graphmodel import StandIn
from .model import name_of
from .openvino_runtime import (
    ACTIVATIONS,
    PERFORMANCE_MODES,
    default_calibration_images,
    openvino_available,
    openvino_runner,
    to_openvino,
)
from .patches import PatchProcessor, run_by_grid
from .processor import ImageProcessor
from .trials import COSINE_FLOORS, PathCache, cache_key, model_fingerprint, run_trial, trials_enabled

log = logging.getLogger(__name__)

BACKENDS = INFERENCE_BACKENDS
#: the precisions each backend runs (ONNX Runtime's CPU provider has no bf16/fp16 matmul; torch.compile of
#: torch's dynamically quantized Linear falls back to eager, so int8 compiles to nothing faster)
BACKEND_PRECISIONS = {"eager": ("fp32", "bf16", "fp16", "int8"), "compile": ("fp32", "bf16", "fp16"),
                      "onnxruntime": ("fp32", "int8"), "openvino": ("fp32", "bf16", "int8")}


@dataclass(frozen=True)
class CpuCapability:
    """What the CPU offers for matrix multiplies: torch's dispatch level and native bf16 / int8 dot products."""

    isa: str  # torch.backends.cpu.get_cpu_capability(): "DEFAULT", "AVX2", "AVX512", "ZVECTOR", ...
    native_bf16: bool  # AVX512-BF16 or AMX: bf16 GEMMs in hardware (without them torch emulates, ~100x slower)
    vnni: bool  # AVX512-VNNI / AVX-VNNI: int8 dot products in one instruction

    @classmethod
    def detect(cls) -> CpuCapability:
        probe = lambda name: bool(getattr(torch.cpu, name, lambda: False)())  # noqa: E731 (private torch probes)
        return cls(isa=torch.backends.cpu.get_cpu_capability(),
                   native_bf16=probe("_is_avx512_bf16_supported") or probe("_is_amx_tile_supported"),
                   vnni=probe("_is_vnni_supported"))

    def describe(self) -> str:
        yes = {True: "yes", False: "no"}
        return f"{self.isa}, native bf16: {yes[self.native_bf16]}, VNNI: {yes[self.vnni]}"


@dataclass(frozen=True)
class Plan:
    """A precision and backend, with why they were chosen."""

    precision: str
    backend: str
    reason: str


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def choose_path(device: str, precision: str = "auto", backend: str = "auto", *,
                cpu: CpuCapability | None = None, has_onnxruntime: bool = False, cuda_bf16: bool = False,
                has_openvino: bool = False) -> Plan:
    """The precision and backend ``auto`` stands for on ``device`` ('cpu' or 'cuda') when no trial is run
    (``optimize_for_inference`` times the candidates instead by default); explicit choices are checked and kept.
    From ViT-B/16 measurements (see README, Performance): on a CPU, OpenVINO for int8 (NNCF's static int8 beats
    ONNX Runtime's dynamic int8) and for bf16 (native bf16 only); ONNX Runtime for fp32 (and int8 without
    OpenVINO); bf16 only pays with native bf16. On CUDA: bf16 (fp16 without bf16 support), eager with SDPA's
    flash kernel; int8 runs on the CPU only. ``auto`` precision never picks int8: it trades more accuracy than
    bf16's floor, so a user asks for it.
    """
    for value, allowed, what in ((precision, INFERENCE_PRECISIONS, "precision"), (backend, BACKENDS, "backend")):
        if value not in allowed:
            raise ConfigError(f"{what}={value!r} is not supported: use one of {', '.join(allowed)}.")
    if precision == "auto":
        if device == "cuda":
            precision, why = ("bf16", "bf16 tensor cores") if cuda_bf16 else ("fp16", "no bf16 on this GPU")
        elif cpu is not None and cpu.native_bf16:
            precision, why = "bf16", "the CPU has native bf16"
        else:
            precision, why = "fp32", "no native bf16 on this CPU (emulated bf16 is ~100x slower)"
    else:
        why = "as asked"
    _check_device(device, precision, backend)
    if backend == "auto":
        if device == "cpu" and has_openvino and precision in ("bf16", "int8"):
            backend, how = "openvino", f"OpenVINO is the fastest {precision} CPU runtime measured"
        elif device == "cpu" and precision in ("fp32", "int8") and has_onnxruntime:
            backend, how = "onnxruntime", "ONNX Runtime is the fastest CPU runtime for fp32 and int8"
        else:
            backend, how = "eager", ("onnxruntime is not installed" if device == "cpu" and precision != "bf16"
                                     else "eager torch (oneDNN / SDPA kernels)")
    else:
        how = "as asked"
    return Plan(precision, backend, f"precision {precision}: {why}; backend {backend}: {how}")


def _check_device(device: str, precision: str, backend: str) -> None:
    if backend != "auto" and precision not in BACKEND_PRECISIONS[backend]:
        raise ConfigError(f"backend={backend!r} does not run precision={precision!r}: it runs "
                          f"{', '.join(BACKEND_PRECISIONS[backend])}.")
    if device != "cpu" and (precision == "int8" or backend in ("onnxruntime", "openvino")):
        raise ConfigError(f"precision={precision!r} with backend={backend!r} runs on the CPU only (the model is "
                          f"on {device}); use precision='bf16' or 'fp16' with backend 'eager' or 'compile'.")
    if device == "cpu" and precision == "fp16":
        raise ConfigError("precision='fp16' is for CUDA; on a CPU use 'fp32', 'int8' or (with native bf16) 'bf16'.")


def plan_for(device: torch.device | str, precision: str = "fp32", backend: str = "auto") -> Plan:
    """``choose_path`` for ``device`` on this machine (its CPU capability, GPU and installed runtimes)."""
    device = torch.device(device)
    cpu = CpuCapability.detect()
    plan = choose_path(device.type, precision, backend, cpu=cpu, has_onnxruntime=onnxruntime_available(),
                       cuda_bf16=device.type == "cuda" and torch.cuda.is_bf16_supported(),
                       has_openvino=openvino_available())
    if plan.precision == "bf16" and device.type == "cpu" and not cpu.native_bf16:
        log.warning("bf16 on a CPU without native bf16 (%s) is emulated and far slower than fp32", cpu.describe())
    return plan


class InferenceRunner:
    """A model prepared for inference: ``runner(x)`` maps (B, 3, H, W) float images to the model's output."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], plan: Plan, device: torch.device,
                 name: str, module: nn.Module | None = None) -> None:
        self._fn, self.plan, self.device, self.name = fn, plan, device, name
        self.module = module  # the converted copy that runs (None for ONNX Runtime)

    @property
    def precision(self) -> str:
        return self.plan.precision

    @property
    def backend(self) -> str:
        return self.plan.backend

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self._fn(x).to(self.device)

    def __repr__(self) -> str:
        return (f"InferenceRunner({self.name}, precision={self.precision!r}, backend={self.backend!r}, "
                f"device={self.device}; {self.plan.reason})")


def _onnx_runner(model: nn.Module, precision: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """ONNX Runtime on the exported graph (int8: ONNX Runtime's dynamic quantizer), as many threads as torch."""
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "model.onnx", precision=precision, verify=False).path
        session = onnx_session(path.read_bytes(), threads=torch.get_num_threads())
    return lambda x: torch.from_numpy(session.run(None, {"pixel_values": x.detach().float().cpu().numpy()})[0])


def _onnx_patch_runner(model: nn.Module, precision: str) -> Callable[[Any], torch.Tensor]:
    """ONNX Runtime on the exported graph of padded patch sequences (``export_onnx_native``): a ``PatchBatch``
    in one call, whatever its grids."""
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx_native(model, Path(tmp) / "model.onnx", precision=precision, verify=False).path
        session = onnx_session(path.read_bytes(), threads=torch.get_num_threads())
    return lambda batch: torch.from_numpy(session.run(None, patch_feeds(batch))[0])


def _native(model: nn.Module, plan: Plan, image_fn: Callable[[torch.Tensor], torch.Tensor] | None
            ) -> Callable[[Any], torch.Tensor]:
    """A runner of ``PatchBatch``es: ONNX Runtime on the graph of patch sequences (its mask an input), eager
    torch on the batch as it is; the other backends (and rotary models on ONNX Runtime, which have no such
    graph) run their image graph once per grid."""
    if plan.backend == "onnxruntime" and model.config.rope == "none":
        return _onnx_patch_runner(model, plan.precision)
    if plan.backend == "eager" and image_fn is not None:  # the converted model takes patch batches as they are
        return image_fn
    if image_fn is None:
        image_fn = _onnx_runner(model, plan.precision)
    return partial(run_by_grid, image_fn, patch_size=model.config.patch_size[0], channels=model.config.in_chans)


def _compiled(module: nn.Module, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """torch.compile: on a CPU with Inductor's freezing (weights folded as constants, prepacked for oneDNN);
    on CUDA with CUDA graphs (mode 'reduce-overhead'). Compiles at the first call (tens of seconds)."""
    if device.type == "cuda":
        return torch.compile(module, mode="reduce-overhead", dynamic=False)
    return torch.compile(module, options={"freezing": True})


def _build(model: nn.Module, plan: Plan, device: torch.device, *, calibration: Any, mode: str, native: bool = False,
           activations: str = "default", converted: dict[str, Any] | None = None
           ) -> tuple[Callable[[torch.Tensor], torch.Tensor], nn.Module | None]:
    """The callable of one path (of ``PatchBatch``es when ``native``), and the converted module that runs (None
    outside torch). ``converted``: OpenVINO models by precision, shared by the paths of one trial (one NNCF
    quantization for every int8 compile)."""
    if native:
        fn, module = (None, None) if plan.backend == "onnxruntime" else _build(
            model, plan, device, calibration=calibration, mode=mode, activations=activations, converted=converted)
        return _native(model, plan, fn), module
    if plan.backend == "onnxruntime":
        return _onnx_runner(model, plan.precision), None
    if plan.backend == "openvino":
        shared = converted if converted is not None else {}
        if plan.precision not in shared:
            shared[plan.precision] = to_openvino(model, precision=plan.precision, calibration=calibration)
        return openvino_runner(model, plan.precision, mode=mode, activations=activations,
                               ov_model=shared[plan.precision]), None
    module = convert_precision(model, plan.precision)
    return (_compiled(module, device) if plan.backend == "compile" else module), module


def _trial_input(model: nn.Module, batch_size: int, native: bool = False) -> Any:
    """Real photos through the model's preprocessing (random pixels for a model without a pretrained cfg);
    ``native``: as patch sequences at the model's budget."""
    if native:
        return PatchProcessor.from_model(model, pad_to="longest")(default_calibration_images(batch_size))
    try:
        processor = ImageProcessor.from_model(model)
    except ConfigError:
        c = model.config
        return torch.randn(batch_size, c.in_chans, *c.img_size)
    photos = default_calibration_images(batch_size)
    return processor(photos)


def _tuned(model: nn.Module, static: Plan, device: torch.device, *, batch_size: int, calibration: Any, mode: str,
           cache: PathCache, native: bool = False
           ) -> tuple[Plan, Callable[[torch.Tensor], torch.Tensor], nn.Module | None]:
    """The fastest installed CPU path in the static plan's precision, by a timed trial (or the cached winner)."""
    cpu = CpuCapability.detect()
    key = cache_key(model_fingerprint(model), cpu=cpu.describe(), threads=torch.get_num_threads(),
                    batch=batch_size, precision=static.precision + ("|native" if native else ""))
    hit = cache.get(key)
    if hit is not None and hit["backend"] in BACKENDS and hit.get("mode", "latency") in PERFORMANCE_MODES \
            and hit.get("activations", "default") in ACTIVATIONS:
        plan = Plan(static.precision, hit["backend"], f"{hit.get('reason', '')} (cached in {cache.path})")
        return (plan, *_build(model, plan, device, calibration=calibration, mode=mode or hit.get("mode", "latency"),
                              native=native, activations=hit.get("activations", "default")))
    candidates = _candidates(static.precision, batch_size, mode, native, cpu)
    converted: dict[str, Any] = {}
    built = {label: _build(model, Plan(static.precision, b, ""), device, calibration=calibration, mode=m,
                           native=native, activations=a, converted=converted)
             for label, (b, m, a) in candidates.items()}
    x = _trial_input(model, batch_size, native)
    with torch.inference_mode():
        reference = model(x).float()
        result = run_trial({label: fn for label, (fn, _) in built.items()}, x, reference,
                           {label: COSINE_FLOORS[static.precision] for label in built})
    backend, won_mode, won_activations = candidates[result.winner]
    reason = (f"precision {static.precision}: {static.reason.split(';')[0].split(': ', 1)[-1]}; backend "
              f"{result.winner}: the fastest that met the {COSINE_FLOORS[static.precision]} cosine floor, "
              f"{result.describe(batch_size)} ({cpu.describe()}, {torch.get_num_threads()} threads)")
    cache.put(key, {"precision": static.precision, "backend": backend, "mode": won_mode,
                    "activations": won_activations, "reason": reason})
    plan = Plan(static.precision, backend, reason)
    return (plan, *built[result.winner])


def _candidates(precision: str, batch_size: int, mode: str | None, native: bool, cpu: CpuCapability
                ) -> dict[str, tuple[str, str, str]]:
    """The trial's paths, label -> (backend, OpenVINO mode, int8 activations): every installed runtime that has
    ``precision``; OpenVINO's throughput mode too (the batch over its streams) for a batch of more than one image
    when no mode is asked for; and for int8 on a CPU with native bf16, OpenVINO with the ops between the integer
    GEMMs in f32 as well as in the plugin's bf16."""
    installed = {"eager": True, "onnxruntime": onnxruntime_available(), "openvino": openvino_available()}
    out = {b: (b, mode or "latency", "default") for b in ("eager", "onnxruntime", "openvino")
           if installed[b] and precision in BACKEND_PRECISIONS[b]}
    if "openvino" in out and mode is None and batch_size > 1 and not native:
        out["openvino (throughput streams)"] = ("openvino", "throughput", "default")
    if "openvino" in out and precision == "int8" and cpu.native_bf16:
        out["openvino (f32 activations)"] = ("openvino", mode or "latency", "f32")
    return out


def optimize_for_inference(model: nn.Module, precision: str = "fp32", backend: str = "auto", *,
                           calibration: Any = None, mode: str | None = None, trial: bool | None = None,
                           batch_size: int = 8, cache_dir: str | os.PathLike | None = None,
                           native: bool = False) -> InferenceRunner:
    """A fast callable for ``model``'s inference: ``runner(x)`` for (B, 3, H, W) float images returns the
    output (logits, or pooled features for a headless model) as a tensor on the model's device.

    ``precision``: 'fp32'; 'bf16' (bf16 weights and activations); 'fp16' (CUDA); 'int8' (integer GEMMs); 'auto'
    (bf16 where the device has it natively, else fp32; never int8). ``backend``: 'eager', 'compile'
    (torch.compile), 'onnxruntime', 'openvino' (CPU) or 'auto'. On a CPU, 'auto' times every installed runtime
    in that precision on a batch of ``batch_size`` real photos and keeps the fastest that stays within the
    precision's cosine floor of eager fp32 (``trials.COSINE_FLOORS``); the winner is cached (``cache_dir``,
    default ``$VITKIT_CACHE_DIR`` or ~/.cache/vitkit) so the next run starts at once. ``trial=False`` (or
    ``VITKIT_AUTO_TRIAL=0``) uses the static rule (``choose_path``) instead. The choice and why are in
    ``repr(runner)`` and the log. The caller's model is not changed.

    int8 is dynamic quantization for eager and ONNX Runtime, NNCF's static quantization for OpenVINO, calibrated
    on ``calibration`` (batches from ``openvino_runtime.calibration_batches``; by default crops of
    scikit-learn's sample photos). OpenVINO's ``mode``: 'latency' (one request runs the batch) or 'throughput'
    (the batch split over the plugin's streams, run at once); None: latency, and 'auto''s trial times both for a
    batch of more than one image. On a CPU with native bf16, 'auto''s int8 trial also times OpenVINO with the ops
    between the integer GEMMs in f32 beside the plugin's bf16.

    ``native=True``: the runner takes images at their own aspect ratio, a ``vitkit.patches.PatchBatch``
    (``PatchProcessor``'s patches, mask and grids), in one call: ONNX Runtime runs the graph of padded patch
    sequences (``export.export_onnx_native``, the mask an input); the other backends run their image graph once
    per distinct grid (``patches.run_by_grid``), as do rotary models.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} is not allowed: expected a positive number of images.")
    if mode is not None and mode not in PERFORMANCE_MODES:
        raise ConfigError(f"mode={mode!r} is not supported: use 'latency' or 'throughput' (OpenVINO's performance "
                          f"modes), or leave it out.")
    if isinstance(model, StandIn):
        raise ConfigError(f"{model.model_name!r} is an exported graph ({model.description}): it runs in the precision "
                          f"and on the backend it was written for, so precision={precision!r} and "
                          f"backend={backend!r} do not apply; drop them (or export the model again in that "
                          f"precision).")
    device = next(model.parameters()).device
    plan = plan_for(device, precision, backend)
    name = name_of(model)
    if backend == "auto" and device.type == "cpu" and trials_enabled(trial):
        plan, fn, module = _tuned(model, plan, device, batch_size=batch_size, calibration=calibration, mode=mode,
                                  cache=PathCache(cache_dir), native=native)
    else:
        fn, module = _build(model, plan, device, calibration=calibration, mode=mode or "latency", native=native)
    runner = InferenceRunner(fn, plan, device, name, module)
    log.info("%r", runner)
    return runner


__all__ = ["BACKENDS", "INFERENCE_PRECISIONS", "CpuCapability", "InferenceRunner", "Plan", "choose_path",
           "optimize_for_inference", "plan_for"]
