"""Load test of `vitkit serve` on loopback: throughput and latency at a fixed concurrency, with dynamic batching
and with --max-batch-size 1 (the same server otherwise), bounded in requests and time.

    .venv/bin/python benchmarks/bench_serve.py --model vit_tiny_patch16_224 --requests 400 --concurrency 16
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _server import Served  # noqa: E402  (the tests' server starter: a free loopback port, bounded waits)


def _jpeg() -> bytes:
    import skimage.data

    buf = io.BytesIO()
    Image.fromarray(skimage.data.chelsea()).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _load(served: Served, image: bytes, *, requests: int, concurrency: int, time_limit: float) -> dict:
    deadline = [float("inf")]  # set once the warm-up is done

    def one(_: int) -> tuple[float, int | str]:
        if time.monotonic() > deadline[0]:
            return 0.0, "skipped"
        start = time.monotonic()
        try:
            status, _ = served.request("POST", "/predict?top_k=5", image, {"Content-Type": "image/jpeg"}, timeout=60)
        except OSError as exc:
            status = type(exc).__name__
        return time.monotonic() - start, status

    for _ in range(2 * concurrency):  # warm-up: the worker's first batches
        one(0)
    start = time.monotonic()
    deadline[0] = start + time_limit
    with ThreadPoolExecutor(concurrency) as pool:
        results = [r for r in pool.map(one, range(requests)) if r[1] != "skipped"]
    wall = time.monotonic() - start
    ok = sorted(t for t, s in results if s == 200)
    errors = sorted({str(s) for _, s in results if s != 200})
    return {"requests": len(results), "errors": sum(s != 200 for _, s in results), "error_kinds": errors,
            "seconds": round(wall, 2),
            "throughput_rps": round(len(ok) / wall, 2),
            "p50_ms": round(1000 * statistics.median(ok), 1) if ok else None,
            "p99_ms": round(1000 * float(np.percentile(ok, 99)), 1) if ok else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vit_tiny_patch16_224", help="registry name or saved model (random weights "
                                                                   "are fine: speed only)")
    ap.add_argument("--requests", type=int, default=400, help="timed requests per server (default 400)")
    ap.add_argument("--concurrency", type=int, default=16, help="clients sending at once (default 16)")
    ap.add_argument("--max-batch-size", type=int, default=16, help="the batching server's --max-batch-size")
    ap.add_argument("--batch-timeout-ms", type=float, default=10.0, help="the batching server's --batch-timeout-ms")
    ap.add_argument("--time-limit", type=float, default=120.0, help="seconds per server at most (default 120)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    image = _jpeg()
    figures = {}
    for name, flags in (("batched", ["--max-batch-size", str(args.max_batch_size),
                                     "--batch-timeout-ms", str(args.batch_timeout_ms)]),
                        ("max-batch-size 1", ["--max-batch-size", "1"])):
        served = Served(args.model, *flags, "--timeout-s", "60", timeout=180)
        try:
            figures[name] = _load(served, image, requests=args.requests, concurrency=args.concurrency,
                                  time_limit=args.time_limit)
        finally:
            served.stop()
        print(f"{name:>17}: {json.dumps(figures[name])}", flush=True)
    ratio = figures["batched"]["throughput_rps"] / max(figures["max-batch-size 1"]["throughput_rps"], 1e-9)
    print(f"model {args.model}, concurrency {args.concurrency}: dynamic batching gives {ratio:.2f}x the "
          f"throughput of --max-batch-size 1")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "concurrency": args.concurrency,
                                               "ratio": round(ratio, 2), **figures}, indent=2) + "\n")


if __name__ == "__main__":
    main()
