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
from ..choices import EVAL_SPLITS as SPLITS
from ..errors import ConfigError
from ..training.config import DATA_SETTINGS, GROUPS, TrainConfig
from ..training.interrupt import TrainingInterrupted
from .train_flags import add_settings, setting_flags, settings_from_args

DATA_HELP = ("image folder: <class>/<image> (split by --val-fraction) or train/ and val/ inside; "
             "default: the bundled 8x8 digits")
EVAL_CHECKPOINTS = ("best", "last", "best_ema", "ema")
def _share(part: int, whole: int) -> str:
    """``part`` of ``whole`` as a percentage that never rounds a non-zero share to 0 (772 of 22M: '<0.01%')."""
    share = 100.0 * part / max(whole, 1)
    if 0 < share < 0.01:
        return "<0.01%"
    return f"{share:.2f}%" if share < 1 else f"{share:.1f}%"


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {plural or word + 's'}"


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig the command line describes."""
    settings = settings_from_args(args)
    if args.linear_probe:
        if args.freeze not in ("none", "backbone"):
            raise ConfigError(f"--linear-probe trains only the head; drop --freeze {args.freeze} or --linear-probe.")
        settings["freeze"] = "backbone"
    return TrainConfig(data=args.data, **{k: v for k, v in settings.items() if k != "data"})


def _print_start(s: dict[str, Any]) -> None:
    data = "the digits" if s["source"] == "digits" else "an image folder"
    chosen = "" if s["model_given"] else f" (the default for {data}; choose with --model)"
    size = f"each image's own aspect ratio, up to {s['max_patches']} patches" if s.get("max_patches") else \
        f"{s['img_size']} pixels"
    print(f"model {s['model']}{chosen} at {size}: {s['params']:,} parameters, "
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
            state = Path(cfg.resolved().run.out) / STATE_FILE
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

    given = {"data": args.data, "val_fraction": args.val_fraction, "seed": args.seed,
             **settings_from_args(args, ["source"])}
    given = {k: v for k, v in given.items() if k in ("data", "val_fraction", "seed", *DATA_SETTINGS)}
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
        unset = action.default is None or isinstance(action.default, bool) or action.default in ([], ()) \
            or action.default is argparse.SUPPRESS
        if "default" not in text and not unset and action.option_strings:
            text += " (default: %(default)s)"
        return text


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", nargs="?", help=DATA_HELP)
    for group in GROUPS:
        add_settings(p, group)
    p.add_argument("--linear-probe", action="store_true", help="train only the head (same as --freeze backbone)")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", formatter_class=DefaultsHelp,
        help="fine-tune a model on an image folder (default: the bundled digits)",
        description="Fine-tune a ViT: a new head sized to the data's classes, AdamW with warmup + cosine, "
                    "augmentations, best/last checkpoints, metrics, plots and report.json under --out. "
                    "Runs distributed under `torchrun --nproc_per_node=N -m vitkit train ...`.")
    _add_train_args(p)
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
    add_settings(e, "source", only=DATA_SETTINGS, defaults={"threshold": None},
                 title="data sources instead of DATA, and multi-label data")
    e.add_argument("--batch-size", type=cli_type(positive_int, "--batch-size"), default=128)
    e.add_argument("--workers", type=cli_type(int_between(0), "--workers"))
    e.add_argument("--device")
    e.add_argument("--json", action="store_true", help="machine-readable output (with the confusion matrix)")
    e.set_defaults(func=cmd_eval, library_options=setting_flags(e))
