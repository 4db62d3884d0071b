"""Where eager fp32 inference spends its time: the share in matrix multiplies, and their rate against the GEMM peak.

Bounds the fp32 speed-up any runtime can reach on this machine: if GEMMs take share ``g`` of the time and
run at fraction ``r`` of the peak, a runtime with free non-GEMM work and peak GEMMs is at most
``1 / (g * r)`` times faster.

    .venv/bin/python benchmarks/profile_gemm_share.py --model vit_base_patch16_224 --batch-size 8
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch.profiler import ProfilerActivity, profile

import vitkit
from vitkit.bench import flops_per_image, gemm_peak

GEMM_OPS = ("aten::addmm", "aten::mm", "aten::bmm", "aten::matmul", "aten::linear", "aten::convolution",
            "aten::_scaled_dot_product_flash_attention_for_cpu")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_base_patch16_224")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--iters", type=int, default=2)
    args = parser.parse_args()
    model = vitkit.create_model(args.model).eval()
    x = torch.randn(args.batch_size, 3, *model.config.img_size)
    c = model.config
    tokens = (c.num_patches + c.num_prefix_tokens) * args.batch_size
    peak = gemm_peak(torch.float32, tokens, c.embed_dim, int(c.embed_dim * c.mlp_ratio))
    with torch.inference_mode():
        model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.iters):
                model(x)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    # self time of the leaf kernels (addmm, mm, flash attention, convolution's mkldnn kernel)
    gemm = sum(e.self_cpu_time_total for e in events if e.key in GEMM_OPS or "mkldnn" in e.key)
    seconds = total / 1e6 / args.iters
    rate = flops_per_image(model) * args.batch_size / (gemm / 1e6 / args.iters) / 1e9
    print(f"{args.model}, batch {args.batch_size}, {torch.get_num_threads()} threads: {seconds:.2f} s per batch")
    print(f"matrix multiplies: {gemm / total:.0%} of the time, at {rate:.1f} GFLOP/s = {rate / peak:.0%} of the "
          f"measured fp32 GEMM peak ({peak:.1f} GFLOP/s)")
    print(f"upper bound on an fp32 speed-up over eager: {1 / (gemm / total * rate / peak):.2f}x")
    print(events.table(sort_by="self_cpu_time_total", row_limit=8))
    return 0


if __name__ == "__main__":
    sys.exit(main())
