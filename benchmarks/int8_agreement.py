"""int8 against fp32 where it counts: top-1 agreement and cosine of every int8 path `auto` can take, on the held-out
split of a model fine-tuned on the bundled digits (the main job's `runs/digits/best`), and the cosine on the
bench's photos for ViT-B/16 (random weights: top-1 of an untrained model is a near-tie, so only the cosine).

    bash scripts/main.sh   # writes runs/digits/best
    .venv/bin/python benchmarks/int8_agreement.py --digits runs/digits/best

Paths: eager (torch's dynamic int8 Linear), ONNX Runtime's dynamic quantizer, OpenVINO through NNCF with the
plugin's activations and with f32 activations (calibrated on the training split's first 64 digits, not on the
held-out ones). It prints the CPU's instruction set first.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

import vitkit
from vitkit.bench import bench_input
from vitkit.data.datasets import stratified_split
from vitkit.data.digits import load_digits_images
from vitkit.inference import CpuCapability
from vitkit.openvino_runtime import calibration_batches, compile_openvino, compiled_runner, to_openvino


def int8_paths(model: torch.nn.Module, calibration: list) -> dict:
    quantized = to_openvino(model, precision="int8", calibration=calibration)
    return {"eager int8 (dynamic)": vitkit.optimize_for_inference(model, "int8", "eager"),
            "onnxruntime int8 (dynamic)": vitkit.optimize_for_inference(model, "int8", "onnxruntime"),
            "openvino int8 (NNCF)": compiled_runner(compile_openvino(quantized, precision="int8")),
            "openvino int8 (NNCF), f32 activations": compiled_runner(compile_openvino(quantized, precision="int8",
                                                                                      activations="f32"))}


def _cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)


def digits(folder: Path) -> None:
    model = vitkit.from_pretrained(folder).eval()
    report = json.loads((folder.parent / "report.json").read_text()) if (folder.parent / "report.json").is_file() \
        else {}
    settings = report.get("config", report)
    fraction, seed = float(settings.get("val_fraction", 0.2)), int(settings.get("seed", 0))
    images, labels = load_digits_images()
    train, held_out = stratified_split(labels, fraction, seed)
    processor = vitkit.ImageProcessor.from_model(model)
    x = processor([images[i] for i in held_out])
    truth = torch.tensor([labels[i] for i in held_out])
    calibration = calibration_batches(model, [images[i] for i in train[:64]])
    with torch.no_grad():
        want = model(x)
    print(f"\ndigits ({folder}): {len(held_out)} held-out images (val_fraction {fraction}, seed {seed}); fp32 top-1 "
          f"{(want.argmax(-1) == truth).float().mean():.2%}")
    print("| path | top-1 agreement with fp32 | top-1 | mean cosine | least cosine |")
    print("|---|---|---|---|---|")
    for label, run in int8_paths(model, calibration).items():
        got = torch.cat([run(x[i:i + 64]).float() for i in range(0, len(x), 64)])
        cos = _cosines(got, want)
        print(f"| {label} | {(got.argmax(-1) == want.argmax(-1)).float().mean():.2%} | "
              f"{(got.argmax(-1) == truth).float().mean():.2%} | {cos.mean():.5f} | {cos.min():.5f} |")


def photos(name: str) -> None:
    torch.manual_seed(0)
    model = vitkit.create_model(name).eval()
    x = bench_input(model, 8)
    with torch.no_grad():
        want = model(x)
    print(f"\n{name} (random weights) on the bench's 8 photos")
    print("| path | mean cosine | least cosine |")
    print("|---|---|---|")
    for label, run in int8_paths(model, calibration_batches(model)).items():
        cos = _cosines(run(x).float(), want)
        print(f"| {label} | {cos.mean():.5f} | {cos.min():.5f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits", type=Path, default=Path("runs/digits/best"))
    parser.add_argument("--model", default="vit_base_patch16_224", help="the photo model (random weights)")
    args = parser.parse_args()
    print(f"CPU: {CpuCapability.detect().describe()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    if args.digits.is_dir():
        digits(args.digits)
    else:
        print(f"no {args.digits}: run `bash scripts/main.sh` first for the digits rows", file=sys.stderr)
    photos(args.model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
