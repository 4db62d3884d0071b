"""`vitkit train` and `vitkit eval`: fine-tune a ViT on an image folder (or the bundled digits), measure it."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any

from ..checks import cli_type, int_between, positive_int
from ..choices import AUGMENT_POLICIES as POLICIES
from ..choices import EVAL_SPLITS as SPLITS
from ..errors import ConfigError
from ..training.config import DIGITS_DEFAULTS, DISTILL_MODES, FOLDER_DEFAULTS, TRAIN_PRECISIONS, TrainConfig
from ..training.interrupt import TrainingInterrupted
from .train_flags import add_source_args, add_training_args, setting_flags, source_settings, training_settings

DATA_HELP = ("image folder: <class>/<image> (split by --val-fraction) or train/ and val/ inside; "
             "default: the bundled 8x8 digits")
EVAL_CHECKPOINTS = ("best", "last", "best_ema", "ema")
# CLI flag -> TrainConfig field, for the flags whose value passes through unchanged
PASSTHROUGH = ("out", "model", "weights", "val_fraction", "epochs", "batch_size", "eval_batch_size", "accum_steps",
               "lr", "min_lr", "weight_decay", "warmup_epochs", "layer_decay", "label_smoothing", "freeze",
               "precision", "aug", "magnitude", "hflip", "mixup", "cutmix", "seed", "deterministic", "workers",
               "threads", "device", "save_every_steps", "export_samples", "grad_checkpointing", "max_steps",
               "log_every", "img_size", "overwrite", "ema",
               "teacher", "teacher_weights", "distill", "distill_alpha", "distill_tau", "compile")


def _share(part: int, whole: int) -> str:
    """``part`` of ``whole`` as a percentage that never rounds a non-zero share to 0 (772 of 22M: '<0.01%')."""
    share = 100.0 * part / max(whole, 1)
    if 0 < share < 0.01:
        return "<0.01%"
    return f"{share:.2f}%" if share < 1 else f"{share:.1f}%"


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {plural or word + 's'}"


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
    settings.update(training_settings(args))
    return TrainConfig(**settings)


def _print_start(s: dict[str, Any]) -> None:
    data = "the digits" if s["source"] == "digits" else "an image folder"
    chosen = "" if s["model_given"] else f" (the default for {data}; choose with --model)"
    print(f"model {s['model']}{chosen} at {s['img_size']} pixels: {s['params']:,} parameters, "
          f"{s['trainable_params']:,} trainable ({_share(s['trainable_params'], s['params'])}, "
          f"{_lora_line(s) or 'freeze=' + s['freeze']})")
    if s.get("teacher"):
        t = s["teacher"]
        print(f"teacher {t['model']}: {t['mode']} distillation (alpha {t['alpha']:g}) through the student's "
              f"{t['through']}")
    skipped = f", {s['skipped_files']} unreadable files skipped" if s["skipped_files"] else ""
    print(f"data {s['source']}: {s['train_images']} training / {s['val_images']} validation images, "
          f"{_plural(s['classes'], 'class', 'classes')}{skipped}{_data_details(s)}")
    where = f"{s['world_size']} processes" if s["world_size"] > 1 else s["device"]
    resumed = f", resuming at epoch {s['start_epoch'] + 1}, step {s['start_step']}" if s["resumed"] else ""
    print(f"{_plural(s['epochs'], 'epoch')} x {_plural(s['steps_per_epoch'], 'step')} of batch {s['batch_size']} on "
          f"{where}{resumed} -> {s['out']}", flush=True)


def _print_epoch(r: dict[str, Any]) -> None:
    from ..training.tasks import task_of

    print(task_of(r).epoch_line(r), flush=True)


def _data_details(summary: dict[str, Any]) -> str:
    """', multi-label (1.8 labels per image)' / ', columns image/label' for label files and datasets, else ''."""
    parts = []
    if "kind" in summary:
        per = summary.get("labels_per_image")
        parts.append(summary["kind"] + (f" ({per:g} labels per image)" if summary["kind"] == "multi-label" else ""))
    if "image_column" in summary:
        parts.append(f"columns {summary['image_column']}/{summary['label_column']}")
    if "val_source" in summary:
        parts.append(f"validation from {summary['val_source']}")
    return "".join(f", {p}" for p in parts)


def _lora_line(summary: dict[str, Any]) -> str:
    """'LoRA r=8 alpha=16 on qkv,proj (12 linears)' for a run with adapters, else ''."""
    lora = summary.get("lora")
    if not lora:
        return ""
    return (f"LoRA r={lora['rank']} alpha={lora['alpha']:g} on {','.join(lora['targets'])} "
            f"({lora['adapted_linears']} linears)")


def resume_command(world_size: int) -> str:
    """The command that continues this run: the one typed, without --overwrite, with --resume."""
    argv = sys.argv[1:]
    argv = argv[argv.index("train") + 1:] if "train" in argv else []
    argv = [a for a in argv if a != "--overwrite"]
    if not any(a == "--resume" or a.startswith("--resume=") for a in argv):
        argv.append("--resume")
    launcher = ["torchrun", f"--nproc_per_node={world_size}", "-m", "vitkit"] if world_size > 1 else ["vitkit"]
    return shlex.join([*launcher, "train", *argv])


def _quiet_other_ranks() -> None:
    """Under torchrun only rank 0 speaks: the other ranks' warnings would repeat each one once per process."""
    if int(os.environ.get("RANK", "0")) > 0:
        logging.getLogger("vitkit").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore")


def cmd_train(args: argparse.Namespace) -> int:
    from ..training.api import train
    from ..training.checkpoint import STATE_FILE
    from ..training.tasks import pct as _pct
    from ..training.tasks import task_of

    _quiet_other_ranks()
    cfg = config_from_args(args)
    try:
        result = train(cfg, on_start=lambda s: _print_start({**s, "model_given": args.model is not None}),
                       on_epoch=_print_epoch)
    except TrainingInterrupted as stop:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"vitkit train: interrupted at epoch {stop.epoch + 1}, step {stop.step}; training state written "
                  f"to {stop.checkpoint}. Continue with: {resume_command(int(os.environ.get('WORLD_SIZE', '1')))}",
                  file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # before the loop began, or a second Ctrl-C: no state written now
        if int(os.environ.get("RANK", "0")) == 0:
            state = Path(cfg.resolved().out) / STATE_FILE
            kept = f"the last state saved before it is {state}; continue with: " \
                   f"{resume_command(int(os.environ.get('WORLD_SIZE', '1')))}" if state.is_file() else \
                "no training state was written"
            print(f"vitkit train: interrupted; {kept}", file=sys.stderr)
        return 130
    r = result.report
    if not r:  # a rank other than 0
        return 0
    if not result.completed:
        print(f"stopped after step {r['steps']} (--max-steps); continue with --resume")
    if r["epochs"]:
        print(f"{task_of(r).best_line(r)}; {r['train_time_s']:.1f}s of training")
        if "best_ema_val_top1" in r:
            print(f"EMA best top-1 {_pct(r['best_ema_val_top1'])} (epoch {r['best_ema_epoch']}), final "
                  f"{_pct(r['final_ema_val_top1'])}; the best weights are the {r['best_weights']} ones")
        print(f"checkpoints: {' '.join(r['checkpoints'].values())}")
        print(f"report: {Path(result.out) / 'report.json'}; plots: {' '.join(r['plots'].values()) or 'none'}")
    if r["samples"]:
        print(f"try: vitkit predict {Path(r['samples'][0]).parent}/*.png --model {r['checkpoints']['best']}")
    return 0


def _run_report(run: str) -> dict[str, Any]:
    """The report.json of a finished run (for its data split and checkpoints)."""
    path = Path(run) / "report.json"
    if not path.is_file():
        raise ConfigError(f"--run {run!r} has no report.json; pass the --out folder of a finished `vitkit train`.")
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:  # unreadable, not JSON, or nested too deep
        raise ConfigError(f"{str(path)!r} cannot be read as JSON ({type(exc).__name__}); it is damaged. Pass "
                          f"--model {run}/best (or last) and the data instead.") from None
    if not isinstance(report, dict):
        raise ConfigError(f"{str(path)!r} is not a training report (a JSON object); pass --model and the data instead.")
    return report


def _run_checkpoint(run: str, report: dict[str, Any], which: str) -> tuple[str, str]:
    """(model folder, description) of the ``which`` checkpoint of a run, e.g. 'best (epoch 7 of 10)'."""
    folder = Path(run) / which
    if not folder.is_dir():
        raise ConfigError(f"--run {run!r} has no {which}/ checkpoint; choose one of "
                          f"{', '.join(sorted(p.name for p in Path(run).iterdir() if (p / 'config.json').is_file()))}.")
    epochs = report.get("epochs")
    epoch = report.get("best_epoch") if which == "best" else epochs if which == "last" else \
        report.get("best_ema_epoch") if which == "best_ema" else epochs
    return str(folder), f"{which} (epoch {epoch} of {epochs})" if epoch is not None else which


# the report's config settings that say what a run trained on, with what each must be
_PATH = (lambda v: v is None or (isinstance(v, str) and 0 < len(v) <= 4096 and "\0" not in v), "a path or null")
RUN_DATA_CHECKS: dict[str, tuple[Any, str]] = {
    "data": _PATH, "labels": _PATH, "val_labels": _PATH, "hf_dataset": _PATH, "image_column": _PATH,
    "label_column": _PATH,
    "val_fraction": (lambda v: isinstance(v, float) and 0 < v < 1, "a fraction between 0 and 1"),
    "seed": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63, "an integer seed"),
    "multi_label": (lambda v: v is None or isinstance(v, bool), "true, false or null"),
    "threshold": (lambda v: isinstance(v, float) and 0 < v < 1, "a score threshold between 0 and 1"),
}


def _run_data(run: str, report: dict[str, Any]) -> dict[str, Any]:
    """The data settings a run trained with, from its report.json, each checked (a damaged report: one line)."""
    cfg = report.get("config")
    if not isinstance(cfg, dict):
        raise ConfigError(f"{run}/report.json has no 'config' object; it is damaged. Pass --model {run}/best and "
                          f"the data instead.")
    found = {k: cfg[k] for k in RUN_DATA_CHECKS if k in cfg}
    for key, value in found.items():
        ok, expected = RUN_DATA_CHECKS[key]
        if not ok(value):
            raise ConfigError(f"{run}/report.json says {key}={str(value)[:80]!r}, expected {expected}; the report is "
                              f"damaged. Pass --model {run}/best and the data instead.")
    return found


def cmd_eval(args: argparse.Namespace) -> int:
    from ..training.evaluation import evaluate
    from ..training.tasks import task_of

    given = {"data": args.data, "val_fraction": args.val_fraction, "seed": args.seed, **source_settings(args)}
    settings = {k: v for k, v in given.items() if v is not None}
    model, described = args.model, args.model
    if args.run:
        report = _run_report(args.run)
        if not any(settings.get(k) for k in ("data", "labels", "hf_dataset")):  # the run's data, unless given
            settings = {**_run_data(args.run, report), **settings}
        if model is None:
            model, which = _run_checkpoint(args.run, report, args.checkpoint)
            described = f"{model}: the {which} checkpoint"
    if model is None:
        raise ConfigError("Name the model to evaluate: --model DIR (a saved model, e.g. runs/digits/best) or "
                          "--run OUT (the --out folder of a training run).")
    folder = settings.get("data") not in (None, "digits") and not (settings.get("labels") or settings.get("hf_dataset"))
    if args.val_fraction == 1:  # everything held out: the whole folder
        settings.pop("val_fraction")
        split = args.split or "all"
    else:
        split = args.split or ("all" if folder and not args.run and args.val_fraction is None else "val")
    settings = {k: v for k, v in settings.items() if v is not None}
    result = evaluate(model, weights=args.weights, batch_size=args.batch_size, split=split, device=args.device,
                      workers=args.workers, **settings)
    if args.json:
        print(json.dumps({"model": model, **result}, indent=2))
        return 0
    scope = "every image" if split == "all" else f"{split} split"
    print(f"{described} on {result['data']} ({scope}, {result['val_images']} images): "
          f"{task_of(result).eval_line(result)}, loss {result['val_loss']:.4f}"
          + (f", {result['skipped_images']} unreadable images skipped" if result["skipped_images"] else ""))
    return 0


class DefaultsHelp(argparse.HelpFormatter):
    """Help that shows each fixed default; settings whose default depends on the data say so in their help."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == [] \
            or action.default is argparse.SUPPRESS
        if "default" not in text and not unset and action.option_strings:
            text += " (default: %(default)s)"
        return text


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(f"{v:g}" for v in value)
    return "the number of cores" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _preset(field: str, what: str = "") -> str:
    """Help text for a setting whose default depends on the data (the digits or an image folder)."""
    digits, folder = DIGITS_DEFAULTS[field], FOLDER_DEFAULTS[field]
    return f"{what}{'; ' if what else ''}default depends on the data: {_show(digits)} for the digits, " \
           f"{_show(folder)} for an image folder"


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", nargs="?", help=DATA_HELP)
    for add in (_add_model_args, _add_schedule_args, _add_teacher_args, _add_run_args):
        add(p)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    """What trains, from which weights, at which size, and where the run goes."""
    a = p.add_argument_group("model and output").add_argument
    d = TrainConfig  # defaults: TrainConfig's own (its dataclass fields' class attributes)
    a("--out", help=_preset("out", "output folder"))
    a("--overwrite", action="store_true", help="replace a run already in --out (otherwise refused; see --resume)")
    a("--model", help=_preset("model", "registry name, saved model folder or checkpoint, or a JSON file of ViTConfig "
                                       "fields"))
    a("--weights", help="pretrained weights for a registry --model (any supported checkpoint); default: none "
                        "(random initialisation)")
    a("--img-size", type=int, metavar="N", help="input size N x N (position embeddings resampled); default: the "
                                                "model's own (vit_digits: 32, *_224: 224)")
    a("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a ViTConfig field (repeatable)")
    a("--freeze", default=d.freeze, help="none | backbone (linear probing) | blocks:N (last N blocks + head)")
    a("--linear-probe", action="store_true", help="train only the head (same as --freeze backbone)")


def _add_schedule_args(p: argparse.ArgumentParser) -> None:
    """The recipe: schedule, optimizer, loss and augmentation."""
    a = p.add_argument_group("schedule, optimizer and augmentation").add_argument
    d = TrainConfig  # defaults: TrainConfig's own (its dataclass fields' class attributes)
    a("--epochs", type=int, help=_preset("epochs", "passes over the training split"))
    a("--batch-size", type=int, help=_preset("batch_size", "global batch per optimizer step, over processes and "
                                                           "accumulation"))
    a("--accum-steps", type=int, default=d.accum_steps, help="gradient accumulation steps per optimizer step")
    a("--eval-batch-size", type=int, default=d.eval_batch_size, help="batch of the validation passes")
    a("--lr", type=float, help=_preset("lr", "peak learning rate (after warmup)"))
    a("--min-lr", type=float, default=d.min_lr, help="learning rate at the end of the cosine")
    a("--warmup-epochs", type=float, help=_preset("warmup_epochs", "epochs of linear warmup (fractions allowed)"))
    a("--weight-decay", type=float, default=d.weight_decay,
      help="AdamW decay (never on norms, biases, embeddings, tokens)")
    a("--layer-decay", type=float, help="layer-wise lr decay (1: off); default depends on the weights: 0.75 with "
                                        "--weights on an image folder, else 1")
    a("--label-smoothing", type=float, default=d.label_smoothing, help="label smoothing of the cross-entropy")
    a("--clip-grad", type=float, default=d.clip_grad, help="gradient norm clip (0: off)")
    a("--precision", choices=TRAIN_PRECISIONS, default=d.precision, help="autocast precision")
    a("--aug", choices=POLICIES, help=_preset("aug", "augmentation policy after crop and flip"))
    a("--magnitude", type=int, default=d.magnitude, help="RandAugment magnitude 0..30")
    a("--hflip", type=float, help=_preset("hflip", "horizontal flip probability"))
    a("--crop-scale", type=float, nargs=2, metavar=("MIN", "MAX"),
      help=_preset("crop_scale", "random resized crop area range"))
    a("--mixup", type=float, default=d.mixup, help="mixup alpha (0: off)")
    a("--cutmix", type=float, default=d.cutmix, help="cutmix alpha (0: off)")


def _add_teacher_args(p: argparse.ArgumentParser) -> None:
    """A teacher to distil from, and an average of the weights."""
    a = p.add_argument_group("distillation and EMA").add_argument
    d = TrainConfig  # defaults: TrainConfig's own (its dataclass fields' class attributes)
    a("--teacher", metavar="MODEL", help="distil from this model (registry name with --teacher-weights, saved "
                                         "model folder or checkpoint; it must predict the data's classes); default: "
                                         "none")
    a("--teacher-weights", metavar="SRC", help="weights for a registry --teacher")
    a("--distill", choices=DISTILL_MODES, default=d.distill,
      help="DeiT distillation through the student's distillation head (distilled models), else its logits: hard "
           "(the teacher's class) or soft (KL at --distill-tau)")
    a("--distill-alpha", type=float, default=d.distill_alpha, help="weight of the teacher's term (1 - it: labels)")
    a("--distill-tau", type=float, default=d.distill_tau, help="temperature of soft distillation")
    a("--ema", type=float, metavar="DECAY",
      help="also keep an exponential moving average of the weights with this decay (e.g. 0.999; warm-up "
           "min(DECAY, (1+t)/(10+t)) at step t), validated each epoch and saved as OUT/ema and OUT/best_ema; "
           "default: off")


def _add_run_args(p: argparse.ArgumentParser) -> None:
    """Where and how the run executes: data split, devices, checkpoints, logging."""
    a = p.add_argument_group("running").add_argument
    d = TrainConfig  # defaults: TrainConfig's own (its dataclass fields' class attributes)
    a("--val-fraction", type=float, default=d.val_fraction, help="held-out fraction when the folder has no val/")
    a("--seed", type=int, default=d.seed, help="seed of the split, the initialisation and the augmentation")
    a("--deterministic", action="store_true", help="deterministic kernels (a resumed run equals an uninterrupted one)")
    a("--workers", type=int, help="data loading processes; default depends on the data: 0 for the digits (in "
                                  "memory), else the cores left beside training (at most 8)")
    a("--threads", type=int, help=_preset("threads", "CPU threads for torch"))
    a("--device", help="cpu, cuda or cuda:N (default: this rank's GPU if there is one, else the CPU)")
    a("--resume", nargs="?", const="auto",
      help="continue from OUT/checkpoint.pt (or the given checkpoint) with the same training settings; a changed "
           "schedule (--epochs, --lr, --batch-size, ...) is refused: start a new run with --weights OUT/last instead")
    a("--save-every-steps", type=int, default=d.save_every_steps,
      help="also checkpoint every N steps (0: at the end of each epoch only)")
    a("--export-samples", type=int, help=_preset("export_samples", "held-out images per class to write to "
                                                                   "OUT/samples"))
    a("--grad-checkpointing", action="store_true", help="recompute activations: less memory, more compute")
    a("--compile", action="store_true", help="torch.compile the model for the training step (the first steps "
                                             "pay a compile of ~30 s; pays off on long runs)")
    a("--max-steps", type=int, help="stop after N optimizer steps (the schedule still spans all epochs)")
    a("--log-every", type=int, default=d.log_every,
      help="steps between reads of the loss on the host (progress bar, non-finite check)")
    a("--no-plots", action="store_true", help="skip the PNG plots")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", formatter_class=DefaultsHelp,
        help="fine-tune a model on an image folder (default: the bundled digits)",
        description="Fine-tune a ViT: a new head sized to the data's classes, AdamW with warmup + cosine, "
                    "augmentations, best/last checkpoints, metrics, plots and report.json under --out. "
                    "Runs distributed under `torchrun --nproc_per_node=N -m vitkit train ...`.")
    _add_train_args(p)
    add_source_args(p, training=True)
    add_training_args(p)
    p.set_defaults(func=cmd_train, library_options=setting_flags(p))

    e = subparsers.add_parser("eval", formatter_class=DefaultsHelp, help="accuracy of a model on a data split",
                              description="Top-1/top-5 accuracy (multi-label: mAP and F1) and loss of a trained "
                                          "model on every image of a folder, or on the split `vitkit train` held "
                                          "out (the same data, seed and fraction; --run: the run's own data).")
    e.add_argument("data", nargs="?", help=DATA_HELP)
    e.add_argument("--model", help="saved model folder or checkpoint (or a registry name with --weights)")
    e.add_argument("--run", help="a training run's --out folder: one of its checkpoints (see --checkpoint) and its "
                                 "data split")
    e.add_argument("--checkpoint", default="best", choices=EVAL_CHECKPOINTS,
                   help="which checkpoint of --run: best (highest validation top-1), last (the final epoch), or with "
                        "--ema the EMA weights' best_ema / ema")
    e.add_argument("--weights", help="weights for a registry --model")
    e.add_argument("--val-fraction", type=float, help="held-out fraction (default 0.2; given: --split val)")
    e.add_argument("--seed", type=int, help="split seed (default 0)")
    e.add_argument("--split", choices=SPLITS, help="all: every image of DATA (its val/ when it has train/ and val/); "
                   "val: the split `vitkit train` held out; train: the rest. Default: all for a folder DATA, val "
                   "for --run, the digits, a label file or a dataset")
    add_source_args(e, training=False)
    e.add_argument("--batch-size", type=cli_type(positive_int, "--batch-size"), default=128)
    e.add_argument("--workers", type=cli_type(int_between(0), "--workers"))
    e.add_argument("--device")
    e.add_argument("--json", action="store_true", help="machine-readable output (with the confusion matrix)")
    e.set_defaults(func=cmd_eval, library_options=setting_flags(e))
