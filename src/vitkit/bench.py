"""`vitkit bench`: vitkit's inference paths against timm and transformers, measured side by side in one run.

Every runtime gets the same random weights and the same input; outputs are checked against eager fp32
vitkit before timing. Each runtime is warmed up, then all are timed round-robin in a rotating order (so
drift of a shared machine falls on all alike), with the same thread count. Reported: median img/s, the
ratio to timm fp32 eager, and the share of this machine's matrix-multiply peak, measured in the same run
on the model's own MLP matrix (fp32, and bf16 where bf16 rows run).

timm and transformers are optional peers: imported only here, when a benchmark runs, and skipped with a
note when they are not installed.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError, ConfigError
from .export import export_onnx, onnx_session, quantize_onnx
from .graphmodel import is_graph_file, load_graph_model, read_description
from .inference import CpuCapability, onnxruntime_available, optimize_for_inference
from .model import name_of
from .openvino_runtime import (
    DEFAULT_CALIBRATION,
    calibration_batches,
    compile_openvino,
    compiled_runner,
    default_calibration_images,
    openvino_available,
    to_openvino,
)
from .processor import ImageProcessor
from .trials import COSINE_FLOORS

log = logging.getLogger(__name__)

#: cosine similarity to eager fp32 a runtime must reach for its timing to count (the accuracy floors)
FLOORS = {k: COSINE_FLOORS[k] for k in ("fp32", "bf16", "int8")}
REFERENCE = "timm eager"


@dataclass
class Runtime:
    label: str
    precision: str
    fn: Callable[[torch.Tensor], torch.Tensor]

    @property
    def key(self) -> str:
        return f"{self.label} {self.precision}"


@dataclass
class Row:
    label: str
    precision: str
    batch_size: int
    seconds: list[float]  # per batch, every timed round
    cosine: float
    max_abs_diff: float

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def images_per_s(self) -> float:
        return self.batch_size / self.median_s

    @property
    def spread(self) -> float:
        """(slowest - fastest) / median of the timed rounds: the noise of this machine in this run."""
        return (max(self.seconds) - min(self.seconds)) / self.median_s


@dataclass
class BenchReport:
    model: str
    threads: int
    cpu: CpuCapability
    gflops_per_image: float
    peak_gflops: dict[str, float]  # dtype name -> GEMM GFLOP/s on the model's MLP matrix
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- measuring
def flops_per_image(model: nn.Module) -> float:  # reads model.config only
    """Matrix-multiply FLOPs of one forward pass at the model's input size (2 per multiply-add)."""
    c = model.config
    tokens = c.num_patches + c.num_prefix_tokens
    hidden = int(c.embed_dim * c.mlp_ratio)
    per_block = tokens * c.embed_dim * (4 * c.embed_dim + 2 * hidden) + 2 * tokens * tokens * c.embed_dim
    patch = c.num_patches * c.embed_dim * c.in_chans * c.patch_size[0] * c.patch_size[1]
    return 2.0 * (c.depth * per_block + patch + c.embed_dim * max(c.num_classes, 0))


def gemm_peak(dtype: torch.dtype, m: int, k: int, n: int, budget_s: float = 1.0) -> float:
    """GFLOP/s (int8: GOP/s) of the best of repeated (m, k) @ (k, n) products in ``dtype`` within about
    ``budget_s``; int8 through torch's integer GEMM (int32 accumulation, oneDNN's VNNI kernels where present)."""
    if dtype == torch.int8:
        a, b = torch.randint(-128, 128, (m, k), dtype=dtype), torch.randint(-128, 128, (k, n), dtype=dtype)
        mm = torch._int_mm
    else:
        a, b, mm = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype), torch.mm
    mm(a, b)  # warm-up: first-call allocation and kernel selection
    best, spent, reps = float("inf"), 0.0, 0
    while spent < budget_s or reps < 2:
        start = time.perf_counter()
        mm(a, b)
        took = time.perf_counter() - start
        best, spent, reps = min(best, took), spent + took, reps + 1
    return 2.0 * m * k * n / best / 1e9


def interleaved_times(runners: dict[str, Callable[[], object]], warmup: int, iters: int) -> dict[str, list[float]]:
    """Seconds per call of each runner, after ``warmup`` calls each, timed round-robin in a rotating order."""
    for fn in runners.values():
        for _ in range(warmup):
            fn()
    labels = list(runners)
    times: dict[str, list[float]] = {label: [] for label in labels}
    for i in range(iters):
        for label in labels[i % len(labels):] + labels[: i % len(labels)]:
            start = time.perf_counter()
            runners[label]()
            times[label].append(time.perf_counter() - start)
    return times


# ---------------------------------------------------------------------------------------------- runtimes
def import_peer(name: str):  # noqa: ANN201 (a module)
    """Import an optional peer library (timm, transformers) for a comparison row, or None when it is not
    installed or does not import in this environment (logged with the reason, e.g. a torchvision build that
    does not match torch: timm imports torchvision)."""
    if importlib.util.find_spec(name) is None:
        return None
    try:
        return importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 (any import-time failure of a third-party package)
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        log.warning("%s is installed but does not import here (%s): its rows are skipped", name, reason)
        return None


def peer_runtimes(model: nn.Module, tmp: Path, notes: list[str]) -> list[Runtime]:
    """timm (the reference), transformers and plain ONNX Runtime with the same weights, where installed."""
    from .weights.save import save_pretrained

    out = []
    timm = import_peer("timm")
    if timm is None:
        notes.append("timm is not installed (or does not import): no reference row, ratios are to vitkit eager fp32")
    else:
        c = model.config  # the registry name picks timm's family; these fields follow size overrides
        ref = timm.create_model(model.pretrained_cfg.timm_name or model.model_name, num_classes=c.num_classes,
                                img_size=c.img_size, depth=c.depth, embed_dim=c.embed_dim, num_heads=c.num_heads,
                                mlp_ratio=c.mlp_ratio).eval()
        ref.load_state_dict(model.state_dict())
        out.append(Runtime(REFERENCE, "fp32", ref))
    transformers = import_peer("transformers")
    if transformers is None:
        notes.append("transformers is not installed (or does not import): skipped")
    else:
        try:
            save_pretrained(model, tmp / "hf", format="hf")
            hf = transformers.AutoModelForImageClassification.from_pretrained(tmp / "hf").eval()
            out.append(Runtime("transformers eager", "fp32", lambda x: hf(pixel_values=x).logits))
        except Exception as exc:  # a family transformers has no classifier for: a note, not a failed benchmark
            notes.append(f"transformers: skipped ({exc})")
    if openvino_available():
        out += openvino_peers(model, notes)
    else:
        notes.append("openvino is not installed: its rows are skipped")
    if onnxruntime_available():
        # what a user gets from torch.onnx.export and ONNX Runtime's quantizer with its defaults
        plain = export_onnx(model, tmp / "plain.onnx", verify=False).path
        out.append(_ort_runtime("onnxruntime (plain)", "fp32", plain))
        quantize_onnx(plain, tmp / "plain_int8.onnx", per_channel=False)
        out.append(_ort_runtime("onnxruntime int8 (plain)", "int8", tmp / "plain_int8.onnx"))
    else:
        notes.append("onnxruntime is not installed: its rows are skipped")
    return out


def openvino_peers(model: nn.Module, notes: list[str]) -> list[Runtime]:
    """What a user gets from OpenVINO directly: ``compile_model`` with its defaults (bf16 on a CPU with native
    bf16), with the f32 precision hint, and NNCF's int8 (transformer preset) on the same calibration photos."""
    cpu_bf16 = CpuCapability.detect().native_bf16
    plain = to_openvino(model)
    default = compile_openvino(plain, precision="default")
    rows = [Runtime("openvino (default)", "bf16" if cpu_bf16 else "fp32", compiled_runner(default)),
            Runtime("openvino f32", "fp32", compiled_runner(compile_openvino(plain, precision="fp32")))]
    try:
        int8 = to_openvino(model, precision="int8", calibration=calibration_batches(model))
        rows.append(Runtime("openvino int8 (NNCF)", "int8", compiled_runner(compile_openvino(int8, precision="int8"))))
    except Exception as exc:  # noqa: BLE001 (a peer that cannot quantize this model is a note)
        notes.append(f"openvino int8 (NNCF): skipped ({exc})")
    return rows


def _ort_runtime(label: str, precision: str, path: Path) -> Runtime:
    session = onnx_session(path, threads=torch.get_num_threads())
    return Runtime(label, precision, lambda x: torch.from_numpy(session.run(None, {"pixel_values": x.numpy()})[0]))


def optimized_runtime(model: nn.Module, path: str | os.PathLike) -> Callable[[], Runtime]:
    """A loader of the graph file ``path`` as a benchmark row, checked now (it exists, its description reads,
    it takes the model's input size); it loads when the run starts, with the run's thread count."""
    path = Path(os.fspath(path)).expanduser()
    if not is_graph_file(path):
        raise ConfigError(f"optimized={str(path)!r} is not a graph file: expected an .xml (OpenVINO) or .onnx file "
                          f"written by `vitkit optimize` or `vitkit export`.")
    if not path.is_file():
        raise CheckpointError(f"Cannot load the exported model {str(path)!r}: the file does not exist.")
    data = read_description(path)
    want, got = tuple(model.pretrained_cfg.input_size), tuple(data["pretrained_cfg"].input_size)
    if got != want:
        raise ConfigError(f"{path.name} takes inputs of {got}, the model {name_of(model)!r} {want}: bench it with "
                          f"the model it was written from.")
    label = f"optimized {path.name} ({data['backend']})"
    return lambda: Runtime(label, data["precision"], load_graph_model(path, threads=torch.get_num_threads()))


def vitkit_runtimes(model: nn.Module, cpu: CpuCapability, notes: list[str], compile_: bool, batch_size: int = 8
                    ) -> list[Runtime]:
    """vitkit's paths: eager, compile, auto (fp32, int8; its trial at ``batch_size``) and bf16 where the CPU has
    native bf16."""
    plans = [("fp32", "eager"), ("fp32", "auto"), ("int8", "eager"), ("int8", "auto")]
    if compile_:
        plans.insert(1, ("fp32", "compile"))
    if cpu.native_bf16:
        plans += [("bf16", "eager"), ("bf16", "auto")]
    else:
        notes.append(f"bf16 not run: this CPU has no native bf16 ({cpu.describe()}); emulated bf16 is ~100x "
                     f"slower, and auto never picks it")
    out = []
    for precision, backend in plans:
        runner = optimize_for_inference(model, precision=precision, backend=backend, batch_size=batch_size)
        label = f"vitkit {backend}" + (f" ({runner.backend})" if backend == "auto" else "")
        out.append(Runtime(label, precision, runner))
    return out


# ---------------------------------------------------------------------------------------------- the run
def run_bench(model: nn.Module, *, batch_sizes: tuple[int, ...] = (1, 8), iters: int = 10, warmup: int = 2,
              threads: int | None = None, compile_: bool = True, peers: bool = True,
              optimized: Sequence[str | os.PathLike] = ()) -> BenchReport:
    """Benchmark ``model`` (eval copies; the model is not changed) at each batch size; see the module doc.
    ``optimized``: graph files written from ``model`` by ``vitkit optimize`` or ``vitkit export`` (``.xml``,
    ``.onnx`` with their descriptions), timed and checked against its eager fp32 alongside the other rows."""
    files = [optimized_runtime(model, path) for path in optimized]  # a bad file is refused before any timing
    if threads:
        torch.set_num_threads(threads)
    cpu = CpuCapability.detect()
    c = model.config
    tokens, hidden = c.num_patches + c.num_prefix_tokens, int(c.embed_dim * c.mlp_ratio)
    m = tokens * max(batch_sizes)
    peak = {"fp32": gemm_peak(torch.float32, m, c.embed_dim, hidden),
            "int8": gemm_peak(torch.int8, m, c.embed_dim, hidden)}
    if cpu.native_bf16:
        peak["bf16"] = gemm_peak(torch.bfloat16, m, c.embed_dim, hidden)
    else:  # emulated: one small product says enough (a full one would take seconds)
        peak["bf16"] = gemm_peak(torch.bfloat16, tokens, c.embed_dim, hidden, budget_s=0.0)
    report = BenchReport(name_of(model), torch.get_num_threads(), cpu,
                         flops_per_image(model) / 1e9, peak)
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        others = [load() for load in files] + (peer_runtimes(model, Path(tmp), report.notes) if peers else [])
        for batch_size in batch_sizes:  # auto's trial is per batch size, as a user's runner is
            runtimes = vitkit_runtimes(model, cpu, report.notes, compile_, batch_size) + others
            report.rows += _bench_batch(model, runtimes, batch_size, warmup, iters, report.notes)
        report.notes[:] = list(dict.fromkeys(report.notes))
    return report


def bench_input(model: nn.Module, batch_size: int) -> torch.Tensor:
    """A batch of real photos (crops of scikit-learn's sample photos, not those int8 is calibrated on) through
    the model's preprocessing: activations as real inputs give them, which static int8 depends on."""
    photos = default_calibration_images(batch_size + DEFAULT_CALIBRATION)[DEFAULT_CALIBRATION:]
    return ImageProcessor.from_model(model)(photos)


def _bench_batch(model: nn.Module, runtimes: list[Runtime], batch_size: int, warmup: int, iters: int,
                 notes: list[str]) -> list[Row]:
    x = bench_input(model, batch_size)
    want = runtimes[0].fn(x).float()  # vitkit eager fp32
    agree = {}
    for rt in runtimes:
        got = rt.fn(x).float()
        cos = float(torch.nn.functional.cosine_similarity(got.flatten().double(), want.flatten().double(), dim=0))
        agree[rt.key] = (cos, float((got - want).abs().max()))
        if cos < FLOORS[rt.precision]:
            notes.append(f"{rt.label} at batch {batch_size}: cosine {cos:.6f} to eager fp32 is below the "
                         f"{rt.precision} floor {FLOORS[rt.precision]}")
    times = interleaved_times({rt.key: (lambda f=rt.fn: f(x)) for rt in runtimes}, warmup, iters)
    return [Row(rt.label, rt.precision, batch_size, times[rt.key], *agree[rt.key]) for rt in runtimes]


def _against_peers(report: BenchReport) -> list[str]:
    """Per batch and precision: vitkit auto against the fastest peer row (not vitkit) in that precision."""
    lines = []
    for batch_size in sorted({r.batch_size for r in report.rows}):
        rows = [r for r in report.rows if r.batch_size == batch_size]
        for precision in ("fp32", "bf16", "int8"):
            ours = [r for r in rows if r.precision == precision and r.label.startswith(("vitkit auto", "optimized"))]
            peers = [r for r in rows if r.precision == precision and not r.label.startswith(("vitkit", "optimized"))]
            if not peers:
                continue
            best = max(peers, key=lambda r: r.images_per_s)
            for row in ours:
                lines.append(f"batch {batch_size} {precision}: {row.label} {row.images_per_s:.2f} img/s = "
                             f"{row.images_per_s / best.images_per_s:.2f}x the fastest peer ({best.label}, "
                             f"{best.images_per_s:.2f})")
    return lines


def format_report(report: BenchReport) -> str:
    """The report as a Markdown table with a header saying what was measured where."""
    lines = [f"{report.model}, {report.threads} threads, CPU: {report.cpu.describe()}, torch {torch.__version__}",
             f"GEMM peak on the model's MLP matrix: fp32 {report.peak_gflops['fp32']:.1f} GFLOP/s, "
             f"bf16 {report.peak_gflops['bf16']:.1f} GFLOP/s, int8 {report.peak_gflops.get('int8', 0):.1f} GOP/s; "
             f"{report.gflops_per_image:.1f} GFLOP per image",
             "", "| batch | runtime | precision | img/s | vs timm fp32 | share of GEMM peak | spread | cosine | "
             "max abs diff |", "|---|---|---|---|---|---|---|---|---|"]
    for batch_size in sorted({r.batch_size for r in report.rows}):
        rows = [r for r in report.rows if r.batch_size == batch_size]
        ref = next((r for r in rows if r.label == REFERENCE), rows[0])
        for r in rows:
            peak = report.peak_gflops.get(r.precision, report.peak_gflops["fp32"])
            share = r.images_per_s * report.gflops_per_image / peak
            lines.append(f"| {batch_size} | {r.label} | {r.precision} | {r.images_per_s:.2f} | "
                         f"{r.images_per_s / ref.images_per_s:.2f}x | {share:.0%} | {r.spread:.0%} | "
                         f"{r.cosine:.6f} | {r.max_abs_diff:.2g} |")
    lines += ["", "share of GEMM peak: model FLOPs x img/s over the GEMM peak of the row's precision (fp32, bf16, "
              "int8) measured in this run: the physical limit of matrix multiplies here. spread: (slowest - "
              "fastest) / median round.", *_against_peers(report)]
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)
