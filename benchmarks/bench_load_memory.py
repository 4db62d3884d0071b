"""Peak memory while loading a large checkpoint: vitkit against the usual build-then-copy load.

Writes random vit_large_patch16_224 weights (~1.2 GB fp32) once, then loads them in a fresh subprocess
per method and reads the child's peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``). The child
touches every parameter (a sum) so memory-mapped pages count as they would after a forward pass.

Reported per method: the peak RSS, the baseline RSS after ``import torch, vitkit`` (the interpreter and
libraries, not weights), and both as multiples of the checkpoint's size:

- ``load / file``: (peak - baseline) / file size, the memory the load itself needs. vitkit's goal: <= 1.3
  (one copy of the weights, memory-mapped and assigned to a model built on the meta device);
- ``peak / file``: the whole process's peak over the file size.

    .venv/bin/python benchmarks/bench_load_memory.py [--model vit_large_patch16_224] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

GOAL = 1.3

CHILD = r"""
import json, resource, sys
import torch
import vitkit

method, path, name = sys.argv[1:4]
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
baseline = peak_mb()
if method == "vitkit_create_model":
    model = vitkit.create_model(name, pretrained=path)
elif method == "vitkit_from_pretrained":
    model = vitkit.from_pretrained(path)
elif method == "build_then_load_state_dict":  # what most code does: init a model, read the file, copy
    from safetensors.torch import load_file
    model = vitkit.create_model(name)
    model.load_state_dict(load_file(path))
else:
    raise SystemExit(f"unknown method {method}")
with torch.no_grad():
    total = sum(float(p.sum()) for p in model.parameters())  # touch every page
print(json.dumps({"method": method, "baseline_mb": baseline, "peak_mb": peak_mb(),
                  "params": sum(p.numel() for p in model.parameters())}))
"""

METHODS = {
    "vitkit_create_model": "model.safetensors",
    "vitkit_from_pretrained": "model.safetensors",
    "vitkit_create_model_pth": "model.pth",
    "build_then_load_state_dict": "model.safetensors",
}


def write_checkpoints(name: str, folder: Path) -> None:
    """Random weights of ``name`` as timm-style .safetensors and .pth (written in a child, to free them)."""
    script = (
        "import sys, torch, vitkit\n"
        "from safetensors.torch import save_file\n"
        "m = vitkit.create_model(sys.argv[1], device='meta')\n"
        "sd = {k: torch.randn(v.shape) * 0.02 for k, v in m.state_dict().items()}\n"
        "save_file(sd, sys.argv[2] + '/model.safetensors')\n"
        "torch.save(sd, sys.argv[2] + '/model.pth')\n")
    subprocess.run([sys.executable, "-c", script, name, str(folder)], check=True)


def measure(method: str, path: Path, name: str) -> dict[str, float]:
    child_method = method.removesuffix("_pth")
    out = subprocess.run([sys.executable, "-c", CHILD, child_method, str(path), name], check=True,
                         capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["method"] = method
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_large_patch16_224")
    parser.add_argument("--keep", type=Path, help="folder to write the checkpoints to and keep (default: temp)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / "model.safetensors").is_file():
            print(f"writing random {args.model} weights to {folder} ...", flush=True)
            write_checkpoints(args.model, folder)
        rows = []
        for method, filename in METHODS.items():
            path = folder / filename
            size_mb = path.stat().st_size / 2**20
            r = measure(method, path, args.model)
            rows.append({**r, "file_mb": size_mb, "load_ratio": (r["peak_mb"] - r["baseline_mb"]) / size_mb,
                         "peak_ratio": r["peak_mb"] / size_mb})
    print(f"\n{args.model}: {rows[0]['params']:,} parameters")
    print(f"{'method':<30}{'file MB':>9}{'baseline MB':>13}{'peak MB':>9}{'load/file':>11}{'peak/file':>11}")
    for r in rows:
        print(f"{r['method']:<30}{r['file_mb']:>9.0f}{r['baseline_mb']:>13.0f}{r['peak_mb']:>9.0f}"
              f"{r['load_ratio']:>11.2f}{r['peak_ratio']:>11.2f}")
    vitkit_ratio = rows[0]["load_ratio"]
    verdict = "meets" if vitkit_ratio <= GOAL else "MISSES"
    print(f"\nvitkit create_model(pretrained=.safetensors) {verdict} the goal: load/file {vitkit_ratio:.2f} <= {GOAL}")
    return 0 if vitkit_ratio <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
