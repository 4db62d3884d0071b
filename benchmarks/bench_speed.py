"""Inference speed of vitkit against timm, transformers and ONNX Runtime, measured in one run.

All runtimes get the same random weights (vitkit's, converted with vitkit's own writers) and the same
input; outputs are checked to agree before timing. Reports the median time per batch, images per
second and each peer's time as a ratio of vitkit's (ratio > 1: the peer is slower).

    .venv/bin/python benchmarks/bench_speed.py --model vit_base_patch16_224 --batch-size 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import vitkit  # noqa: E402
from _refs import import_timm, import_transformers  # noqa: E402


def median_times(runners: dict[str, Callable[[], object]], warmup: int, iters: int) -> dict[str, float]:
    """Median seconds per call of each runner, timed round-robin in a rotating order so that drift of
    the machine (frequency, other processes) falls on every runtime alike."""
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
    return {label: statistics.median(t) for label, t in times.items()}


def build_runners(name: str, x: torch.Tensor, compile_: bool, tmp: Path) -> dict[str, Callable[[], torch.Tensor]]:
    model = vitkit.create_model(name).eval()
    runners: dict[str, Callable[[], torch.Tensor]] = {"vitkit": lambda: model(x)}
    if compile_:
        compiled = torch.compile(model)
        runners["vitkit+compile"] = lambda: compiled(x)
    timm = import_timm()
    ref = timm.create_model(model.pretrained_cfg.timm_name or name, num_classes=model.config.num_classes).eval()
    ref.load_state_dict(model.state_dict())
    runners["timm"] = lambda: ref(x)
    try:
        transformers = import_transformers()
        vitkit.save_pretrained(model, tmp / "hf", format="hf")
        hf = transformers.AutoModelForImageClassification.from_pretrained(tmp / "hf").eval()
        runners["transformers"] = lambda: hf(pixel_values=x).logits
    except Exception as exc:  # a model family transformers has no classifier for
        print(f"transformers: skipped ({exc})", file=sys.stderr)
    try:
        from vitkit.export import export_onnx, onnx_session

        export_onnx(model, tmp / "m.onnx", verify=False)
        session = onnx_session(tmp / "m.onnx", threads=torch.get_num_threads())
        feed = {"pixel_values": x.numpy()}
        runners["onnxruntime"] = lambda: torch.from_numpy(session.run(None, feed)[0])
    except Exception as exc:
        print(f"onnxruntime: skipped ({exc})", file=sys.stderr)
    return runners


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_base_patch16_224")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(vitkit)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = vitkit.get_entry(args.model).build_config()
    x = torch.randn(args.batch_size, cfg.in_chans, *cfg.img_size)
    results = []
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        runners = build_runners(args.model, x, args.compile, Path(tmp))
        want = runners["vitkit"]()
        diffs = {label: float((fn() - want).abs().max()) for label, fn in runners.items()}
        for label, seconds in median_times(runners, args.warmup, args.iters).items():
            results.append({"runtime": label, "ms_per_batch": seconds * 1e3, "images_per_s": args.batch_size / seconds,
                            "max_abs_diff_vs_vitkit": diffs[label]})
    base = results[0]["ms_per_batch"]
    print(f"{args.model}, batch {args.batch_size}, {args.threads} threads, fp32, CPU; torch {torch.__version__}")
    print(f"{'runtime':16s} {'ms/batch':>10s} {'img/s':>8s} {'vs vitkit':>10s} {'max|diff|':>10s}")
    for r in results:
        r["time_ratio_vs_vitkit"] = r["ms_per_batch"] / base
        print(f"{r['runtime']:16s} {r['ms_per_batch']:10.1f} {r['images_per_s']:8.1f} "
              f"{r['time_ratio_vs_vitkit']:9.2f}x {r['max_abs_diff_vs_vitkit']:10.2g}")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "batch_size": args.batch_size, "results": results},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
