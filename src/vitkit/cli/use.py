"""`vitkit predict | features | inspect | attention`: thin wrappers over the library functions.

The library is imported when a command runs, not when its parser is built: `vitkit predict --help` answers
without importing torch (the flags' choices come from ``vitkit.choices``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING

from ..checks import cli_type, int_between, number_between, positive_int, probability
from ..choices import (
    ATTENTION_METHODS,
    FEATURE_POOL_ALIASES,
    FEATURE_POOLS,
    FEATURE_PRECISIONS,
    INFERENCE_BACKENDS,
    INFERENCE_PRECISIONS,
)
from ..errors import ConfigError, DataError, reword
from .engine import add_engine_flags, run_features, run_predict

if TYPE_CHECKING:
    from ..predict import ImagePredictions

BATCH = cli_type(positive_int, "--batch-size")
TOP_K = cli_type(positive_int, "--top-k")
THRESHOLD = cli_type(number_between(0, 1), "--threshold", float)
WORKERS = cli_type(int_between(0), "--workers")
IMG_SIZE = cli_type(positive_int, "--img-size")
DEPTH = cli_type(int_between(0), "--depth")
ALPHA = cli_type(number_between(0, 1), "--alpha", float)
DISCARD = cli_type(probability, "--discard-ratio", float)
MODEL_HELP = "registry name (see `vitkit models`), or a saved model folder / checkpoint file"
WEIGHTS_HELP = ("weights to load into a registry model: a file, a folder, hf-hub:ORG/NAME, or 'pretrained' "
                "for the model's published weights (from the Hugging Face cache; downloaded if missing)")


# What each command's --help says: written for the command line (the library's docstrings speak Python).
PREDICT_TEXT = ("The most probable classes of each image (softmax over the model's logits). Folders are searched "
                "for images; a file that cannot be read is skipped, named on stderr and counted, and the others "
                "are still predicted. --output FILE also writes every prediction as CSV or JSON.")
FEATURES_TEXT = ("Features of every image in the inputs (files and folders), written to --out (.npy or "
                 ".safetensors) with OUT.json (settings, skipped files) and OUT.files.txt (one file per row). "
                 "Unreadable images are skipped and listed. An interrupted run resumes when rerun with the same "
                 "arguments; with --rank/--world-size (or torchrun) each process computes its share and the "
                 "last to finish merges the parts (kept in OUT.parts/ meanwhile). Files beside OUT that a features "
                 "run did not write are never replaced without --overwrite, and an OUT.parts/ that is not "
                 "vitkit's is refused.")
INSPECT_TEXT = ("Structure, output shapes, parameters and MACs of a model (a registry name, a saved model "
                "folder or a checkpoint). --img-size changes the input; shapes show the batch as B unless "
                "--batch-size is given.")
ATTENTION_TEXT = ("Where the model looks: its attention map over the image, written as a PNG with a colour bar, "
                  "the model's name and its predicted class. --panels shows the image, the rollout and the "
                  "last-layer map side by side.")


def _weights(value: str) -> str | bool:
    """``--weights pretrained`` means the published weights (``pretrained=True``), unless a file has that name."""
    return True if value == "pretrained" and not os.path.exists(value) else value


def _add_model(p: argparse.ArgumentParser, *, positional: bool = False) -> None:
    if positional:
        p.add_argument("model", help=MODEL_HELP)
    else:
        p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--weights", type=_weights, help=WEIGHTS_HELP)


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (default: a GPU if there is one)")


def _add_path(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=INFERENCE_PRECISIONS, default="fp32",
                   help="fp32 (default), bf16, fp16, int8 or auto")
    p.add_argument("--backend", choices=INFERENCE_BACKENDS, default="eager",
                   help="eager (default), compile, onnxruntime, openvino, or auto (the fastest measured here)")


def _max_patches(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of patches (e.g. 256)")
    return value


def _add_max_patches(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-patches", type=_max_patches, metavar="N",
                   help="each image at its own aspect ratio, resized to at most N patches (default: a square "
                        "input; a native-aspect checkpoint uses its own budget)")


def _print_path(args: argparse.Namespace) -> None:
    """Say on stderr which inference path runs (stdout may be JSON), when one other than plain fp32 eager was
    asked for (so the default run and its one-line errors stay quiet)."""
    if (args.precision, args.backend) == ("fp32", "eager"):
        return
    from ..inference import plan_for
    from ..runtime import pick_device

    device = pick_device(args.device)
    print(f"inference path: {plan_for(device, args.precision, args.backend).reason}", file=sys.stderr)


def cmd_predict(args: argparse.Namespace) -> int:
    from ..predict import predict

    if args.engine == "ray":
        return run_predict(args)
    _print_path(args)
    results = predict(args.images, args.model, weights=args.weights, top_k=args.top_k, threshold=args.threshold,
                      labels=args.labels, batch_size=args.batch_size, device=args.device,
                      precision=args.precision, backend=args.backend, max_patches=args.max_patches)
    return show_predictions(results, output=args.output, as_json=args.json)


def show_predictions(results: list[ImagePredictions], *, output: str | None, as_json: bool) -> int:
    """Print predictions as `vitkit predict` does (skipped images on stderr) and write them to ``output``."""
    from ..predict import format_predictions, save_predictions

    if output:
        save_predictions(results, output)
    from ..data.images import LIMIT_HINTS  # a skipped image's error is kept as text: its hints said here

    skipped = [r for r in results if r.error is not None]
    for r in skipped if len(results) > 1 else []:
        print(f"skipped {r.source}: {reword(r.error, LIMIT_HINTS, {})}", file=sys.stderr)
    if len(skipped) == len(results):  # nothing to show: one error line (the image's own when there is one)
        raise DataError(skipped[0].error if len(results) == 1 else
                        f"None of the {len(results)} images could be read (each is listed above); nothing was "
                        f"predicted.", hints=LIMIT_HINTS)
    if as_json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        print(format_predictions(results))
    if skipped:
        print(f"{len(skipped)} of {len(results)} image(s) could not be read and were skipped.", file=sys.stderr)
    if output:
        print(f"wrote the predictions of {len(results)} image(s) to {output}", file=sys.stderr)
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from ..features import extract_features, merge_features, sidecars

    if args.engine == "ray":
        return run_features(args)
    if args.merge:
        result = merge_features(args.out, overwrite=args.overwrite)
    else:
        if not args.inputs or not args.model:
            raise ConfigError("give image files or folders and --model (or only --out with --merge).")
        result = extract_features(args.inputs, args.out, model=args.model, weights=args.weights, pool=args.pool,
                                  layers=args.layers, batch_size=args.batch_size, rank=args.rank,
                                  world_size=args.world_size, device=args.device, num_workers=args.workers,
                                  overwrite=args.overwrite, precision=args.precision, max_patches=args.max_patches)
        if args.precision != "fp32":
            print(f"features computed in {args.precision} (eager torch, a converted copy of the model)",
                  file=sys.stderr)
        if result.reused:
            print(f"resumed: {result.reused} images were already done, {result.computed} computed now")
    from ..data.images import LIMIT_HINTS

    for path, error in result.skipped:
        print(f"skipped {path}: {reword(error, LIMIT_HINTS, {})}", file=sys.stderr)
    if result.path is None:
        print("this rank is done; the parts are merged when the last rank finishes (or run with --merge)")
    else:
        print(f"wrote {result.path}: features {result.shape} for {len(result.files)} images "
              f"({len(result.skipped)} skipped); file list in {sidecars(result.path)[1]}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from ..summary import summarize

    summary = summarize(args.model, img_size=args.img_size, batch_size=args.batch_size, weights=args.weights)
    if args.format == "json":
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print(summary.to_text(max_depth=args.depth))
    return 0


def cmd_attention(args: argparse.Namespace) -> int:
    from ..attention import save_attention_map

    out = save_attention_map(args.image, args.out, model=args.model, weights=args.weights, method=args.method,
                             panels=args.panels, alpha=args.alpha, discard_ratio=args.discard_ratio,
                             device=args.device, max_patches=args.max_patches)
    print(f"wrote {out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict", help="top-k classes of images (files or folders)", description=PREDICT_TEXT)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders (searched recursively)")
    _add_model(p)
    p.add_argument("--top-k", type=TOP_K, default=5, help="classes to show per image (default 5)")
    p.add_argument("--threshold", type=THRESHOLD, default=0.5,
                   help="multi-label models: list the classes whose sigmoid score is above this (default 0.5)")
    p.add_argument("--class-names", "--labels", dest="labels", metavar="NAMES",
                   help="class names: 'imagenet-1k', 'digits', or a file (one name per line / JSON); "
                        "--labels is the older spelling")
    p.add_argument("--batch-size", type=BATCH, default=32, help="images per forward pass (default 32)")
    _add_max_patches(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--output", metavar="FILE",
                   help="also write every prediction to FILE: .csv (one row per image and rank) or .json")
    _add_device(p)
    _add_path(p)
    add_engine_flags(p)
    p.set_defaults(func=cmd_predict)

    p = subparsers.add_parser("features", help="extract features of many images to .npy/.safetensors",
                              description=FEATURES_TEXT)
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image files and folders (searched recursively)")
    p.add_argument("--out", required=True, help="output file, .npy or .safetensors")
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--weights", type=_weights, help=WEIGHTS_HELP)
    p.add_argument("--pool", choices=(*FEATURE_POOLS, *FEATURE_POOL_ALIASES), default="default",
                   help="default: what the classifier reads; token (class token), avg (mean patch token), "
                        "map (attention-pool head) or none (all tokens), as the model's global_pool")
    p.add_argument("--layers", type=int, nargs="+", help="block indices to take (negative from the end)")
    _add_max_patches(p)
    p.add_argument("--batch-size", type=BATCH, default=32, help="images per batch and per saved chunk (default 32)")
    p.add_argument("--workers", type=WORKERS, default=4, help="threads that read images (default 4)")
    p.add_argument("--rank", type=int, help="this process's share of a split run (default: $RANK or 0)")
    p.add_argument("--world-size", type=int, help="number of processes splitting the run (default: $WORLD_SIZE or 1)")
    p.add_argument("--merge", action="store_true", help="only merge the finished parts of a split run")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output file (and sidecars beside it that vitkit did not write)")
    _add_device(p)
    p.add_argument("--precision", choices=FEATURE_PRECISIONS, default="fp32",
                   help="fp32 (default), bf16 (only fast with native bf16), fp16 (GPUs), int8 (integer GEMMs) or "
                        "auto (the fastest that keeps the accuracy floors here)")
    add_engine_flags(p)
    p.set_defaults(func=cmd_features)

    p = subparsers.add_parser("inspect", help="structure, output shapes, parameters and MACs of a model",
                              description=INSPECT_TEXT)
    _add_model(p, positional=True)
    p.add_argument("--img-size", type=IMG_SIZE, help="input size (default: the model's)")
    p.add_argument("--batch-size", type=BATCH, help="show shapes for this batch size instead of 'B'")
    p.add_argument("--depth", type=DEPTH, default=3, help="module tree depth to show (default 3)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_inspect, library_options={"img_size": "--img-size"})

    p = subparsers.add_parser("attention", help="attention map of an image as a PNG overlay",
                              description=ATTENTION_TEXT)
    p.add_argument("image", metavar="IMAGE", help="image file")
    _add_model(p)
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--method", choices=ATTENTION_METHODS, default="rollout",
                   help="rollout (all layers) or last (last-layer class-token attention)")
    p.add_argument("--panels", action="store_true", help="image, rollout and last-layer maps side by side")
    p.add_argument("--alpha", type=ALPHA, default=0.5, help="opacity of the map (default 0.5)")
    p.add_argument("--discard-ratio", type=DISCARD, default=0.0, help="rollout: drop this fraction of weakest weights")
    _add_max_patches(p)
    _add_device(p)
    p.set_defaults(func=cmd_attention)

