"""Fine-tuning measurements on the bundled digits, through the real `vitkit.train` path and label files.

(a) LoRA transfer: `vit_digits` trained from scratch on digits 0-4, saved; its head replaced by a fresh
    5-class one; then fine-tuned on digits 5-9 with LoRA adapters (and, for comparison, fully). Reports the
    held-out top-1 on 5-9 (the last epoch's, not the best-of-run) and the share of parameters trained.
    Peak training memory: each phase runs in its own process; the kernel's RSS high-water mark is reset when
    training starts (model built; /proc/self/clear_refs) and read at the end, so "above start" is what
    training itself added (gradients, AdamW's moments, activations). On vit_digits that is dominated by
    activations, so the same comparison also runs for a few steps of a ViT-B/16 (random init, 224x224,
    batch 8; ``--memory-model``), where gradients + AdamW state (12 bytes per trained parameter) dominate.
(b) Multi-label: 32x32 images of two 16x16 digits side by side (labels: the set of digits, 1 or 2 of 10)
    written as PNGs with a CSV label file (`path,labels`), `vit_digits` trained from scratch; reports mAP and
    micro/macro F1 on a held-out file.

    .venv/bin/python benchmarks/finetune_digits.py [--work DIR] [--only lora|multilabel]

Each phase takes a few minutes on one core (threads=1). Results go to WORK/results.json and are printed.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import vitkit
from vitkit.data.datasets import stratified_split
from vitkit.data.digits import load_digits_images
from vitkit.training import TrainConfig, train

# shared by every run: digits fill the frame, a mirrored digit is another symbol (no flips), one thread
COMMON: dict[str, Any] = dict(batch_size=32, aug="none", hflip=0.0, crop_scale=(0.85, 1.0), crop_ratio=(0.9, 1.1),
                              threads=1, plots=False, export_samples=0, seed=0, warmup_epochs=1.0, workers=0)
PHASES: dict[str, dict[str, Any]] = {
    "base": dict(model="vit_digits", epochs=30, lr=2e-3),
    "lora": dict(epochs=20, lr=4e-3, lora_rank=4, lora_alpha=8.0, lora_targets=("qkv", "proj", "fc2"),
                 weight_decay=0.0, layer_decay=1.0),
    "full": dict(epochs=20, lr=1e-3, layer_decay=1.0),
    "multilabel": dict(model="vit_digits", epochs=12, lr=2e-3, label_smoothing=0.0),
    # a few optimizer steps of a larger model on the 5-9 files, for memory only (stops before any evaluation)
    "mem_lora": dict(epochs=1, max_steps=3, batch_size=8, lr=1e-3, lora_rank=4, lora_alpha=8.0,
                     lora_targets=("qkv", "proj", "fc2")),
    "mem_full": dict(epochs=1, max_steps=3, batch_size=8, lr=1e-3),
}


def _write_csv(path: Path, rows: list[tuple[str, str]], header: str) -> Path:
    path.write_text(header + "\n" + "".join(f"{p},{labels}\n" for p, labels in rows))
    return path


def prepare_transfer(work: Path) -> dict[str, Path]:
    """digits 0-4 and 5-9 as PNGs, each split 80/20 (seeded, stratified) into train and held-out label files."""
    images, labels = load_digits_images(32)
    folder = work / "digits"
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, group in (("0-4", range(0, 5)), ("5-9", range(5, 10))):
        idx = [i for i, y in enumerate(labels) if y in group]
        for i in idx:
            images[i].save(folder / f"{i}.png")
        train_idx, val_idx = stratified_split([labels[i] for i in idx], 0.2, seed=0)
        for split, chosen in (("train", train_idx), ("val", val_idx)):
            rows = [(f"digits/{idx[j]}.png", str(labels[idx[j]])) for j in chosen]
            files[f"{name}_{split}"] = _write_csv(work / f"{name}_{split}.csv", rows, "path,label")
    return files


def prepare_pairs(work: Path, n_train: int = 2000, n_val: int = 500) -> dict[str, Path]:
    """Two-digit images: the left digit from one of 1,797 digits, the right from another (train and held-out
    images are drawn from disjoint halves of the digits, so no digit image is seen in both)."""
    images, labels = load_digits_images(16)
    order = np.random.default_rng(0).permutation(len(images))
    halves = {"train": order[: len(order) // 2], "val": order[len(order) // 2:]}
    folder = work / "pairs"
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, n in (("train", n_train), ("val", n_val)):
        rng = np.random.default_rng(1 if split == "train" else 2)
        rows = []
        for k in range(n):
            a, b = rng.choice(halves[split], size=2, replace=True)
            canvas = Image.new("RGB", (32, 32))
            canvas.paste(images[a], (0, 8))
            canvas.paste(images[b], (16, 8))
            name = f"pairs/{split}_{k}.png"
            canvas.save(work / name)
            rows.append((name, ";".join(sorted({str(labels[a]), str(labels[b])}))))
        files[split] = _write_csv(work / f"pairs_{split}.csv", rows, "path,labels")
    return files


def fresh_head(base: Path, out: Path) -> Path:
    """The base model with its 5-class head replaced by a freshly initialised one (same size, new task)."""
    model = vitkit.from_pretrained(base)
    model.reset_classifier(model.num_classes)
    model.pretrained_cfg = model.pretrained_cfg.replace(label_names=None)
    vitkit.save_pretrained(model, out)
    return out


def _status_mib(key: str) -> float:
    return int(re.search(rf"{key}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def _reset_peak() -> float:
    """Reset this process's RSS high-water mark (Linux) and return the RSS now, in MiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mib("VmRSS")


def run_phase(phase: str, work: Path, memory_model: str) -> dict[str, Any]:
    """One training run (in this process); returns its figures and the peak RSS that training added."""
    files = json.loads((work / "files.json").read_text())
    settings = {**COMMON, **PHASES[phase], "out": str(work / phase)}
    if phase == "base":
        settings.update(labels=files["0-4_train"], val_labels=files["0-4_val"])
    elif phase in ("lora", "full"):
        settings.update(labels=files["5-9_train"], val_labels=files["5-9_val"], model=str(work / "base_fresh_head"))
    elif phase.startswith("mem_"):
        settings.update(labels=files["5-9_train"], val_labels=files["5-9_val"], model=memory_model)
    else:
        settings.update(labels=files["train"], val_labels=files["val"])
    marks: dict[str, float] = {}
    start = time.perf_counter()
    result = train(TrainConfig(**settings), on_start=lambda _: marks.update(rss_at_start=_reset_peak()))
    r, s = result.report, result.report["summary"]
    peak = _status_mib("VmHWM")
    out = {"phase": phase, "model": s["model"], "seconds": round(time.perf_counter() - start, 1), "steps": r["steps"],
           "params": s["params"], "trainable_params": s["trainable_params"],
           "trained_share": s["trainable_params"] / s["params"],
           "trainable_state_mib": 12 * s["trainable_params"] / 2**20,
           "rss_at_start_mib": marks["rss_at_start"], "train_peak_rss_mib": peak,
           "train_peak_above_start_mib": peak - marks["rss_at_start"],
           "train_images": s["train_images"], "val_images": s["val_images"]}
    if phase == "multilabel":
        out.update({k: r[k] for k in ("final_val_mAP", "best_val_mAP", "final_val_f1_micro", "final_val_f1_macro")})
    elif not phase.startswith("mem_"):
        out.update(final_val_top1=r["final_val_top1"], best_val_top1=r["best_val_top1"])
    return out


def _subprocess(phase: str, work: Path, memory_model: str) -> dict[str, Any]:
    """Run a phase in its own process, so its peak RSS is its own."""
    proc = subprocess.run([sys.executable, __file__, "--work", str(work), "--phase", phase, "--memory-model",
                           memory_model], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"phase {phase} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="runs/finetune_digits", help="folder for data, runs and results.json")
    ap.add_argument("--only", choices=("lora", "multilabel"), help="run one of the two measurements")
    ap.add_argument("--memory-model", default="vit_base_patch16_224",
                    help="the larger model of the memory comparison (random init; '' to skip it)")
    ap.add_argument("--phase", choices=tuple(PHASES), help=argparse.SUPPRESS)  # internal: one run in this process
    args = ap.parse_args()
    work = Path(args.work).resolve()
    if args.phase:
        print(json.dumps(run_phase(args.phase, work, args.memory_model)))
        return
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    if args.only in (None, "lora"):
        files = {k: str(v) for k, v in prepare_transfer(work).items()}
        (work / "files.json").write_text(json.dumps(files))
        results["base"] = _subprocess("base", work, args.memory_model)
        fresh_head(work / "base" / "last", work / "base_fresh_head")
        for phase in ("lora", "full") + (("mem_lora", "mem_full") if args.memory_model else ()):
            results[phase] = _subprocess(phase, work, args.memory_model)
    if args.only in (None, "multilabel"):
        files = {k: str(v) for k, v in prepare_pairs(work).items()}
        (work / "files.json").write_text(json.dumps(files))
        results["multilabel"] = _subprocess("multilabel", work, args.memory_model)
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    for name, r in results.items():
        print(f"{name:10s} {r['model']:22s} {_score(r):45s} trained {r['trainable_params']:,}/{r['params']:,} "
              f"({100 * r['trained_share']:.2f}%, state {r['trainable_state_mib']:.2f} MiB)  training peak RSS "
              f"+{r['train_peak_above_start_mib']:.0f} MiB over {r['rss_at_start_mib']:.0f}  {r['steps']} steps "
              f"{r['seconds']:.0f}s")


def _score(r: dict[str, Any]) -> str:
    if "final_val_mAP" in r:
        return (f"mAP {r['final_val_mAP']:.4f} (F1 micro {r['final_val_f1_micro']:.4f}, "
                f"macro {r['final_val_f1_macro']:.4f})")
    return f"held-out top-1 {r['final_val_top1']:.4f}" if "final_val_top1" in r else "(memory only)"


if __name__ == "__main__":
    main()
