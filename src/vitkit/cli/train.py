"""`vitkit train` and `vitkit eval`: fine-tune a ViT on an image folder (or the bundled digits), measure it."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from ..data.augment import POLICIES
from ..errors import ConfigError
from ..training import TrainConfig, evaluate, train
from ..training.config import PRECISIONS
from .train_extras import add_extra_args, best_line, data_details, extra_settings, lora_line, multilabel_epoch_line

DATA_HELP = ("image folder: <class>/<image> (split by --val-fraction) or train/ and val/ inside; "
             "default: the bundled 8x8 digits")
# CLI flag -> TrainConfig field, for the flags whose value passes through unchanged
PASSTHROUGH = ("out", "model", "weights", "val_fraction", "epochs", "batch_size", "eval_batch_size", "accum_steps",
               "lr", "min_lr", "weight_decay", "warmup_epochs", "layer_decay", "label_smoothing", "freeze",
               "precision", "aug", "magnitude", "hflip", "mixup", "cutmix", "seed", "deterministic", "workers",
               "threads", "device", "save_every_steps", "export_samples", "grad_checkpointing", "max_steps")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _overrides(items: list[str]) -> dict[str, Any]:
    """``--set FIELD=VALUE`` pairs (VALUE read as JSON when it parses, else as a string)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r} is not FIELD=VALUE (e.g. --set drop_path_rate=0.1).")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig the command line describes."""
    settings = {k: getattr(args, k) for k in PASSTHROUGH}
    if args.linear_probe:
        if args.freeze not in ("none", "backbone"):
            raise ConfigError(f"--linear-probe trains only the head; drop --freeze {args.freeze} or --linear-probe.")
        settings["freeze"] = "backbone"
    settings.update(data=args.data, model_overrides=_overrides(args.set), plots=not args.no_plots,
                    clip_grad=None if args.clip_grad == 0 else args.clip_grad,
                    resume=args.resume, crop_scale=tuple(args.crop_scale) if args.crop_scale else None)
    settings.update(extra_settings(args))  # issue 13's flags (cli/train_extras.py)
    return TrainConfig(**settings)


def _print_start(s: dict[str, Any]) -> None:
    share = 100.0 * s["trainable_params"] / max(s["params"], 1)
    print(f"model {s['model']}: {s['params']:,} parameters, {s['trainable_params']:,} trainable ({share:.1f}%, "
          f"{lora_line(s) or 'freeze=' + s['freeze']})")
    skipped = f", {s['skipped_files']} unreadable files skipped" if s["skipped_files"] else ""
    print(f"data {s['source']}: {s['train_images']} training / {s['val_images']} validation images, "
          f"{s['classes']} classes{skipped}{data_details(s)}")
    where = f"{s['world_size']} processes" if s["world_size"] > 1 else s["device"]
    resumed = f", resuming at epoch {s['start_epoch'] + 1}" if s["resumed"] else ""
    print(f"{s['epochs']} epochs x {s['steps_per_epoch']} steps of batch {s['batch_size']} on {where}{resumed} "
          f"-> {s['out']}", flush=True)


def _print_epoch(r: dict[str, Any]) -> None:
    if "val_mAP" in r:  # a multi-label run (issue 13)
        return print(multilabel_epoch_line(r), flush=True)
    print(f"epoch {r['epoch']:3d}  train_loss {r['train_loss']:.4f}  val_loss {r['val_loss']:.4f}  "
          f"top1 {_pct(r['val_top1'])}  top5 {_pct(r['val_top5'])}  {r['images_per_sec']:.0f} img/s  "
          f"{r['epoch_time_s']:.1f}s" + (f"  skipped {r['skipped_images']}" if r["skipped_images"] else ""),
          flush=True)


def cmd_train(args: argparse.Namespace) -> int:
    result = train(config_from_args(args), on_start=_print_start, on_epoch=_print_epoch)
    r = result.report
    if not r:  # a rank other than 0
        return 0
    if not result.completed:
        print(f"stopped after step {r['steps']} (--max-steps); continue with --resume")
    if r["epochs"]:
        print(f"{best_line(r)}; {r['train_time_s']:.1f}s of training")
        print(f"checkpoints: {r['checkpoints']['best']} {r['checkpoints']['last']} {r['checkpoints']['state']}")
        print(f"report: {Path(result.out) / 'report.json'}; plots: {' '.join(r['plots'].values()) or 'none'}")
    if r["samples"]:
        print(f"try: vitkit predict {Path(r['samples'][0]).parent}/*.png --model {r['checkpoints']['best']}")
    return 0


def _run_settings(run: str) -> dict[str, Any]:
    """data, val_fraction and seed of a finished run (its report.json), so eval uses the same split."""
    path = Path(run) / "report.json"
    if not path.is_file():
        raise ConfigError(f"--run {run!r} has no report.json; pass the --out folder of a finished `vitkit train`.")
    cfg = json.loads(path.read_text()).get("config", {})
    return {k: cfg[k] for k in ("data", "val_fraction", "seed") if k in cfg}


def cmd_eval(args: argparse.Namespace) -> int:
    settings = {"data": args.data, "val_fraction": args.val_fraction, "seed": args.seed}
    model = args.model
    if args.run:
        settings.update({k: v for k, v in _run_settings(args.run).items() if getattr(args, k) is None})
        model = model or os.path.join(args.run, "last")
    if model is None:
        raise ConfigError("Name the model to evaluate: --model DIR (a saved model, e.g. runs/digits/last) or "
                          "--run OUT (the --out folder of a training run).")
    settings = {k: v for k, v in settings.items() if v is not None}
    result = evaluate(model, weights=args.weights, batch_size=args.batch_size, split=args.split, device=args.device,
                      workers=args.workers, **settings)
    if args.json:
        print(json.dumps({"model": model, **result}, indent=2))
        return 0
    hits = round(result["val_top1"] * result["val_images"])
    print(f"{model} on {result['data']} ({result['split']} split, {result['val_images']} images): "
          f"top-1 {_pct(result['val_top1'])} ({hits}/{result['val_images']}), top-5 {_pct(result['val_top5'])}, "
          f"loss {result['val_loss']:.4f}" + (f", {result['skipped_images']} unreadable images skipped"
                                                 if result["skipped_images"] else ""))
    return 0


def _add_train_args(p: argparse.ArgumentParser) -> None:
    a = p.add_argument
    d = TrainConfig  # defaults: TrainConfig's own (its dataclass fields' class attributes)
    a("data", nargs="?", help=DATA_HELP)
    a("--out", help="output folder (default: runs/digits for the digits, runs/train otherwise)")
    a("--model", help="registry name, saved model folder or checkpoint, or a JSON file of ViTConfig fields "
                      "(default: vit_digits)")
    a("--weights", help="pretrained weights for a registry --model (any supported checkpoint)")
    a("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a ViTConfig field (repeatable)")
    a("--freeze", default=d.freeze, help="none | backbone (linear probing) | blocks:N (last N blocks + head)")
    a("--linear-probe", action="store_true", help="train only the head (same as --freeze backbone)")
    a("--epochs", type=int)
    a("--batch-size", type=int, help="global batch per optimizer step, over processes and accumulation")
    a("--accum-steps", type=int, default=d.accum_steps, help="gradient accumulation steps per optimizer step")
    a("--eval-batch-size", type=int, default=d.eval_batch_size)
    a("--lr", type=float, help="peak learning rate (after warmup)")
    a("--min-lr", type=float, default=d.min_lr, help="learning rate at the end of the cosine")
    a("--warmup-epochs", type=float)
    a("--weight-decay", type=float, default=d.weight_decay,
      help="AdamW decay (never on norms, biases, embeddings, tokens)")
    a("--layer-decay", type=float, help="layer-wise lr decay (1: off; default 0.75 with --weights, else 1)")
    a("--label-smoothing", type=float, default=d.label_smoothing)
    a("--clip-grad", type=float, default=d.clip_grad, help="gradient norm clip (0: off)")
    a("--precision", choices=PRECISIONS, default=d.precision, help="autocast precision")
    a("--aug", choices=POLICIES, help="augmentation policy after crop and flip")
    a("--magnitude", type=int, default=d.magnitude, help="RandAugment magnitude 0..30")
    a("--hflip", type=float, help="horizontal flip probability")
    a("--crop-scale", type=float, nargs=2, metavar=("MIN", "MAX"), help="random resized crop area range")
    a("--mixup", type=float, default=d.mixup, help="mixup alpha (0: off)")
    a("--cutmix", type=float, default=d.cutmix, help="cutmix alpha (0: off)")
    a("--val-fraction", type=float, default=d.val_fraction, help="held-out fraction when the folder has no val/")
    a("--seed", type=int, default=d.seed)
    a("--deterministic", action="store_true", help="deterministic kernels (a resumed run equals an uninterrupted one)")
    a("--workers", type=int, help="data loading processes (default: 0 for in-memory data)")
    a("--threads", type=int, help="CPU threads for torch (default: one per core; 1 is faster on a busy machine)")
    a("--device", help="cpu, cuda or cuda:N (default: this rank's GPU if there is one)")
    a("--resume", nargs="?", const="auto", help="continue from OUT/checkpoint.pt (or the given checkpoint)")
    a("--save-every-steps", type=int, default=d.save_every_steps,
      help="also checkpoint every N steps (default: each epoch)")
    a("--export-samples", type=int, help="held-out images per class to write to OUT/samples (digits: 2)")
    a("--grad-checkpointing", action="store_true", help="recompute activations: less memory, more compute")
    a("--max-steps", type=int, help="stop after N optimizer steps (the schedule still spans all epochs)")
    a("--no-plots", action="store_true", help="skip the PNG plots")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="fine-tune a model on an image folder (default: the bundled digits)",
        description="Fine-tune a ViT: a new head sized to the data's classes, AdamW with warmup + cosine, "
                    "augmentations, best/last checkpoints, metrics, plots and report.json under --out. "
                    "Runs distributed under `torchrun --nproc_per_node=N -m vitkit train ...`.")
    _add_train_args(p)
    add_extra_args(p)  # issue 13's flags (cli/train_extras.py)
    p.set_defaults(func=cmd_train)

    e = subparsers.add_parser("eval", help="accuracy of a model on a data split",
                              description="Top-1/top-5 accuracy and loss of a trained model on the held-out split "
                                          "(the same split `vitkit train` used with the same data and seed).")
    e.add_argument("data", nargs="?", help=DATA_HELP)
    e.add_argument("--model", help="saved model folder or checkpoint (or a registry name with --weights)")
    e.add_argument("--run", help="a training run's --out folder: its last model and its data split")
    e.add_argument("--weights", help="weights for a registry --model")
    e.add_argument("--val-fraction", type=float, help="held-out fraction (default 0.2)")
    e.add_argument("--seed", type=int, help="split seed (default 0)")
    e.add_argument("--split", choices=("val", "train"), default="val")
    e.add_argument("--batch-size", type=int, default=128)
    e.add_argument("--workers", type=int)
    e.add_argument("--device")
    e.add_argument("--json", action="store_true", help="machine-readable output (with the confusion matrix)")
    e.set_defaults(func=cmd_eval)
