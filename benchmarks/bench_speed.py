"""Inference speed of vitkit's paths against timm, transformers and ONNX Runtime, measured in one run.

A thin script over ``vitkit.bench`` (the same as ``vitkit bench MODEL``), which can also write the rows
as JSON. See ``vitkit bench --help`` and the README's Performance section.

    .venv/bin/python benchmarks/bench_speed.py --model vit_base_patch16_224 --batch-size 1 8
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

import vitkit
from vitkit.bench import format_report, run_bench


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_base_patch16_224")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (minutes of cold compile)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.manual_seed(0)
    report = run_bench(vitkit.create_model(args.model).eval(), batch_sizes=tuple(args.batch_size), iters=args.iters,
                       warmup=args.warmup, threads=args.threads, compile_=not args.no_compile)
    print(format_report(report))
    if args.json:
        rows = [{**dataclasses.asdict(r), "images_per_s": r.images_per_s} for r in report.rows]
        args.json.write_text(json.dumps({"model": report.model, "cpu": dataclasses.asdict(report.cpu),
                                         "peak_gflops": report.peak_gflops, "rows": rows, "notes": report.notes},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
