"""Tuning past the runtimes' defaults, each variant timed against the default it would replace, in one run.

Variants (all on the same random weights and real photos, outputs checked against eager fp32 with vitkit's
cosine floors, timed round-robin after warm-up with ``vitkit.bench.interleaved_times``):

- OpenVINO bf16 (the CPU plugin's default on a CPU with native bf16) and NNCF int8: latency mode (one stream,
  the batch as one request) against throughput mode (the batch split over the plugin's streams, run at once
  through an ``AsyncInferQueue``), and with thread pinning turned off;
- NNCF int8 with its transformer preset (which quantizes Q K^T but keeps softmax(Q K^T) V in float) against
  NNCF without the transformer model type (that matmul quantized too), and against the performance preset
  (symmetric activations, which VNNI multiplies without a zero-point correction), and with the non-quantized ops
  in f32 instead of the plugin's default (bf16 where the CPU has it): int8 weights with bf16 activations;
- ONNX Runtime fp32 on vitkit's exported graph against the same graph after ONNX Runtime's transformer fusions
  (``onnxruntime.transformers.optimizer``, model type 'vit': fused LayerNorm + residual and bias + GELU);
- SDPA in the exported graph: torch's dynamo exporter at opset 23 writes each attention as one ``Attention`` op
  (needs ``onnxscript``), run by ONNX Runtime and by OpenVINO (f32 and the default compile) against the graph
  vitkit exports (attention as MatMul, Softmax, MatMul);
- eager bf16 against ``torch.compile`` with Inductor freezing (``--compile``; minutes of cold compile on ViT-B).

    .venv/bin/python benchmarks/bench_tuning.py --model vit_base_patch16_224 --batch-size 1 8 --iters 6

It prints the CPU's instruction set first and a Markdown table: img/s, the ratio to the default each variant
would replace, the spread of the timed rounds and the cosine to eager fp32.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

import vitkit
from vitkit.bench import FLOORS, bench_input, interleaved_times
from vitkit.inference import CpuCapability
from vitkit.openvino_runtime import calibration_batches, compiled_runner, to_openvino


def _ov_request(compiled) -> Callable[[torch.Tensor], torch.Tensor]:  # noqa: ANN001
    return compiled_runner(compiled)


def _ov_streams(compiled) -> Callable[[torch.Tensor], torch.Tensor]:  # noqa: ANN001
    return compiled_runner(compiled, streams=True)


def _compile(ov_model, threads: int, *, hint: str | None = None, mode: str = "LATENCY",  # noqa: ANN001
             pinning: bool | None = None):  # noqa: ANN202
    import openvino as ov

    config = {"PERFORMANCE_HINT": mode, "INFERENCE_NUM_THREADS": threads}
    if hint:
        config["INFERENCE_PRECISION_HINT"] = hint
    if pinning is not None:
        config["ENABLE_CPU_PINNING"] = pinning
    return ov.Core().compile_model(ov_model, "CPU", config)


def openvino_models(model: torch.nn.Module) -> tuple:
    """The model in OpenVINO: as exported, NNCF int8 with its transformer preset, with the performance preset, and
    without the transformer model type (which also quantizes softmax(Q K^T) V; the preset keeps it in float)."""
    import nncf

    plain = to_openvino(model)
    batches = calibration_batches(model)
    mixed = to_openvino(model, precision="int8", calibration=batches)
    with contextlib.redirect_stdout(sys.stderr):
        performance = nncf.quantize(plain, nncf.Dataset(batches), model_type=nncf.ModelType.TRANSFORMER,
                                    preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(batches))
        generic = nncf.quantize(plain, nncf.Dataset(batches), subset_size=len(batches))
    return plain, mixed, performance, generic


def onnx_graphs(model: torch.nn.Module, folder: Path) -> dict[str, Path]:
    """vitkit's exported graph, with ONNX Runtime's transformer fusions, and torch's opset-23 graph with one
    ``Attention`` op per block (when onnxscript is installed)."""
    from onnxruntime.transformers import optimizer

    from vitkit.export import export_onnx

    plain = export_onnx(model, folder / "plain.onnx", verify=False).path
    c = model.config
    with contextlib.redirect_stdout(sys.stderr):
        fused = optimizer.optimize_model(str(plain), model_type="vit", num_heads=c.num_heads, hidden_size=c.embed_dim,
                                         opt_level=1)
    print(f"ONNX Runtime's fusions on vitkit's graph: {fused.get_fused_operator_statistics()}", file=sys.stderr)
    fused.save_model_to_file(str(folder / "fused.onnx"))
    out = {"plain": plain, "fused": folder / "fused.onnx"}
    if importlib.util.find_spec("onnxscript") is None:
        print("onnxscript is not installed: no SDPA (opset 23 Attention) graph variants", file=sys.stderr)
        return out
    x = torch.randn(1, c.in_chans, *c.img_size)
    with contextlib.redirect_stdout(sys.stderr):
        torch.onnx.export(model, (x,), str(folder / "sdpa.onnx"), dynamo=True, opset_version=23,
                          input_names=["pixel_values"], dynamic_shapes={"x": {0: torch.export.Dim("batch", max=256)}})
    out["sdpa"] = folder / "sdpa.onnx"
    return out


def _ort(path: Path, threads: int) -> Callable[[torch.Tensor], torch.Tensor]:
    from vitkit.export import onnx_session

    session = onnx_session(path, threads=threads)
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def onnx_variants(graphs: dict[str, Path], threads: int, low: str, ov_low: str
                  ) -> dict[str, tuple[str, str, Callable[[torch.Tensor], torch.Tensor]]]:
    import openvino as ov

    base, ov_f32 = "onnxruntime fp32 (vitkit's graph)", "openvino f32 (vitkit's graph)"
    out = {base: ("fp32", base, _ort(graphs["plain"], threads)),
           "onnxruntime fp32, transformer fusions": ("fp32", base, _ort(graphs["fused"], threads)),
           ov_f32: ("fp32", ov_f32, _ov_request(_compile(ov.Core().read_model(graphs["plain"]), threads, hint="f32")))}
    if "sdpa" in graphs:
        sdpa = ov.Core().read_model(graphs["sdpa"])
        out.update({"onnxruntime fp32, SDPA graph": ("fp32", base, _ort(graphs["sdpa"], threads)),
                    "openvino f32, SDPA graph": ("fp32", ov_f32, _ov_request(_compile(sdpa, threads, hint="f32"))),
                    f"openvino {low}, SDPA graph": (low, ov_low, _ov_request(_compile(sdpa, threads)))})
    return out


def variants(model: torch.nn.Module, ov_models: tuple, threads: int, batch_size: int, compile_bf16: bool,
             graphs: dict[str, Path]) -> dict[str, tuple[str, str, Callable[[torch.Tensor], torch.Tensor]]]:
    """label -> (precision, the label of the default it would replace, runner)."""
    cpu = CpuCapability.detect()
    plain, mixed, performance, generic = ov_models
    low = "bf16" if cpu.native_bf16 else "fp32"
    ov_low, ov_int8 = f"openvino {low} (default compile)", "openvino int8 NNCF (default compile)"
    out = {ov_low: (low, ov_low, _ov_request(_compile(plain, threads))),
           f"openvino {low}, no pinning": (low, ov_low, _ov_request(_compile(plain, threads, pinning=False))),
           ov_int8: ("int8", ov_int8, _ov_request(_compile(mixed, threads))),
           "openvino int8 NNCF, no pinning": ("int8", ov_int8, _ov_request(_compile(mixed, threads, pinning=False))),
           "openvino int8 NNCF, f32 activations": ("int8", ov_int8, _ov_request(_compile(mixed, threads,
                                                                                          hint="f32"))),
           "openvino int8 NNCF performance preset": ("int8", ov_int8, _ov_request(_compile(performance, threads))),
           "openvino int8 NNCF, attention's softmax x V quantized too": ("int8", ov_int8,
                                                                       _ov_request(_compile(generic, threads))),
           **onnx_variants(graphs, threads, low, ov_low)}
    if batch_size > 1:
        out[f"openvino {low}, throughput streams"] = (low, ov_low, _ov_streams(_compile(plain, threads,
                                                                                         mode="THROUGHPUT")))
        out["openvino int8 NNCF, throughput streams"] = ("int8", ov_int8, _ov_streams(_compile(mixed, threads,
                                                                                               mode="THROUGHPUT")))
    if cpu.native_bf16:
        eager = vitkit.optimize_for_inference(model, precision="bf16", backend="eager")
        out["vitkit eager bf16"] = ("bf16", "vitkit eager bf16", eager)
        if compile_bf16:
            from torch._inductor import config as inductor

            inductor.freezing = True
            work = vitkit.optimize_for_inference(model, precision="bf16", backend="compile")
            out["vitkit compile bf16 (freezing)"] = ("bf16", "vitkit eager bf16", work)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_base_patch16_224")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--iters", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--compile", action="store_true", help="also torch.compile bf16 with freezing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = vitkit.create_model(args.model).eval()
    print(f"{args.model}, {args.threads} threads, CPU: {CpuCapability.detect().describe()}, torch {torch.__version__}")
    print("\n| batch | variant | precision | img/s | vs the default it would replace | spread | cosine |")
    print("|---|---|---|---|---|---|---|")
    ov_models = openvino_models(model)
    graphs = onnx_graphs(model, Path(tempfile.mkdtemp(prefix="vitkit-tuning-")))
    for batch_size in args.batch_size:
        x = bench_input(model, batch_size)
        with torch.inference_mode():
            want = model(x).float()
            runs = variants(model, ov_models, args.threads, batch_size, args.compile, graphs)
            cosines = {k: float(torch.nn.functional.cosine_similarity(fn(x).float().flatten().double(),
                                                                        want.flatten().double(), dim=0))
                       for k, (_, _, fn) in runs.items()}
            times = interleaved_times({k: (lambda f=fn, x=x: f(x)) for k, (_, _, fn) in runs.items()}, args.warmup,
                                      args.iters)
        rate = {k: batch_size / statistics.median(t) for k, t in times.items()}
        for k, (precision, default, _) in runs.items():
            spread = (max(times[k]) - min(times[k])) / statistics.median(times[k])
            flag = "" if cosines[k] >= FLOORS[precision] else " (below the floor)"
            print(f"| {batch_size} | {k} | {precision} | {rate[k]:.2f} | {rate[k] / rate[default]:.2f}x | "
                  f"{spread:.0%} | {cosines[k]:.6f}{flag} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
