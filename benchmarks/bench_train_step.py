"""One training step (forward, backward, AdamW) of ViT-S/16 at batch 32: vitkit against timm, fp32.

Same random weights and batch in both; the steps are timed round-robin after warm-up. vitkit's step
uses the optimizer ``vitkit train`` builds (``training.optim.build_optimizer``); a third row shows the
same with torch's fused CPU AdamW, a lever for the training loop. bf16 rows run only where the CPU has
native bf16 (elsewhere they are not applicable: emulated bf16 matmuls are ~100x slower).

    .venv/bin/python benchmarks/bench_train_step.py --model vit_small_patch16_224 --batch-size 32
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
import torch.nn.functional as F

import vitkit
from vitkit.bench import import_peer, interleaved_times
from vitkit.inference import CpuCapability
from vitkit.training.optim import build_optimizer


def make_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
              dtype: torch.dtype | None = None):  # noqa: ANN201 (a closure)
    def step() -> float:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())
    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    torch.manual_seed(0)
    cpu = CpuCapability.detect()
    vit = vitkit.create_model(args.model).train()
    timm = import_peer("timm")
    ref = timm.create_model(vit.pretrained_cfg.timm_name or args.model).train()
    ref.load_state_dict(vit.state_dict())
    fused = vitkit.create_model(args.model).train()
    fused.load_state_dict(vit.state_dict())
    x, y = torch.randn(args.batch_size, 3, 224, 224), torch.randint(0, 1000, (args.batch_size,))
    kw = dict(lr=1e-4, weight_decay=0.05)
    steps = {
        "timm, AdamW": make_step(ref, torch.optim.AdamW(ref.parameters(), **kw), x, y),
        "vitkit, build_optimizer": make_step(vit, build_optimizer(vit, layer_decay=1.0, **kw), x, y),
        "vitkit, fused AdamW": make_step(fused, torch.optim.AdamW(fused.parameters(), fused=True, **kw), x, y),
    }
    if cpu.native_bf16:
        steps["vitkit, bf16 autocast"] = make_step(vit, build_optimizer(vit, layer_decay=1.0, **kw), x, y,
                                                   torch.bfloat16)
    times = interleaved_times(steps, args.warmup, args.iters)
    print(f"{args.model}, batch {args.batch_size}, {torch.get_num_threads()} threads, CPU: {cpu.describe()}, "
          f"torch {torch.__version__}")
    base = statistics.median(times["timm, AdamW"])
    print("| step | s/step (median) | speed vs timm | spread |\n|---|---|---|---|")
    for label, t in times.items():
        med = statistics.median(t)
        print(f"| {label} | {med:.2f} | {base / med:.2f}x | {(max(t) - min(t)) / med:.0%} |")
    if not cpu.native_bf16:
        print("bf16: not applicable on this CPU (no native bf16; emulated bf16 matmuls are ~100x slower)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
