"""`vitkit predict | features | inspect | attention`: thin wrappers over the library functions."""

from __future__ import annotations

import argparse
import json
import sys

from ..attention import METHODS, save_attention_map
from ..errors import VitkitError
from ..features import POOLS, extract_features, merge_features
from ..predict import format_predictions, predict
from ..summary import summarize

MODEL_HELP = "registry name (see `vitkit models`), or a saved model folder / checkpoint file"


def _add_model(p: argparse.ArgumentParser, *, positional: bool = False) -> None:
    if positional:
        p.add_argument("model", help=MODEL_HELP)
    else:
        p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--weights", help="weights to load into a registry model (file, folder or hf-hub: id)")


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (default: a GPU if there is one)")


def _add_path(p: argparse.ArgumentParser) -> None:
    from ..inference import BACKENDS, PRECISIONS

    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="fp32 (default), bf16, fp16, int8 or auto")
    p.add_argument("--backend", choices=BACKENDS, default="eager",
                   help="eager (default), compile, onnxruntime, or auto (the fastest for this machine)")


def _print_path(args: argparse.Namespace) -> None:
    """Say on stderr which inference path runs when one was asked for (stdout may be JSON)."""
    if (args.precision, args.backend) == ("fp32", "eager"):
        return
    import torch

    from ..inference import plan_for

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    print(f"inference path: {plan_for(device, args.precision, args.backend).reason}", file=sys.stderr)


def cmd_predict(args: argparse.Namespace) -> int:
    _print_path(args)
    results = predict(args.images, args.model, weights=args.weights, top_k=args.top_k, labels=args.labels,
                      batch_size=args.batch_size, device=args.device, precision=args.precision,
                      backend=args.backend)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        print(format_predictions(results))
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    if args.merge:
        result = merge_features(args.out)
    else:
        if not args.inputs or not args.model:
            raise VitkitError("give image files or folders and --model (or only --out with --merge).")
        result = extract_features(args.inputs, args.out, model=args.model, weights=args.weights, pool=args.pool,
                                  layers=args.layers, batch_size=args.batch_size, rank=args.rank,
                                  world_size=args.world_size, device=args.device, num_workers=args.workers,
                                  overwrite=args.overwrite)
        if result.reused:
            print(f"resumed: {result.reused} images were already done, {result.computed} computed now")
    for path, error in result.skipped:
        print(f"skipped {path}: {error}", file=sys.stderr)
    if result.path is None:
        print("this rank is done; the parts are merged when the last rank finishes (or run with --merge)")
    else:
        print(f"wrote {result.path}: features {result.shape} for {len(result.files)} images "
              f"({len(result.skipped)} skipped); file list in {result.path.with_suffix('')}.files.txt")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    summary = summarize(args.model, img_size=args.img_size, batch_size=args.batch_size, weights=args.weights)
    if args.format == "json":
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print(summary.to_text(max_depth=args.depth))
    return 0


def cmd_attention(args: argparse.Namespace) -> int:
    out = save_attention_map(args.image, args.out, model=args.model, weights=args.weights, method=args.method,
                             panels=args.panels, alpha=args.alpha, discard_ratio=args.discard_ratio,
                             device=args.device)
    print(f"wrote {out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict", help="top-k classes of images", description=predict.__doc__)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    _add_model(p)
    p.add_argument("--top-k", type=int, default=5, help="classes to show per image (default 5)")
    p.add_argument("--labels", help="class names: 'imagenet-1k', 'digits', or a file (one name per line / JSON)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _add_device(p)
    _add_path(p)
    p.set_defaults(func=cmd_predict)

    p = subparsers.add_parser("features", help="extract features of many images to .npy/.safetensors",
                              description=extract_features.__doc__)
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image files and folders (searched recursively)")
    p.add_argument("--out", required=True, help="output file, .npy or .safetensors")
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--weights", help="weights to load into a registry model")
    p.add_argument("--pool", choices=POOLS, default="default",
                   help="default: what the classifier reads; cls, avg, map, or tokens (all tokens)")
    p.add_argument("--layers", type=int, nargs="+", help="block indices to take (negative from the end)")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch and per saved chunk (default 32)")
    p.add_argument("--workers", type=int, default=4, help="threads that read images (default 4)")
    p.add_argument("--rank", type=int, help="this process's share of a split run (default: $RANK or 0)")
    p.add_argument("--world-size", type=int, help="number of processes splitting the run (default: $WORLD_SIZE or 1)")
    p.add_argument("--merge", action="store_true", help="only merge the finished parts of a split run")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    _add_device(p)
    p.set_defaults(func=cmd_features)

    p = subparsers.add_parser("inspect", help="structure, output shapes, parameters and MACs of a model",
                              description=summarize.__doc__)
    _add_model(p, positional=True)
    p.add_argument("--img-size", type=int, help="input size (default: the model's)")
    p.add_argument("--batch-size", type=int, help="show shapes for this batch size instead of 'B'")
    p.add_argument("--depth", type=int, default=3, help="module tree depth to show (default 3)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_inspect)

    p = subparsers.add_parser("attention", help="attention map of an image as a PNG overlay",
                              description=save_attention_map.__doc__)
    p.add_argument("image", metavar="IMAGE", help="image file")
    _add_model(p)
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--method", choices=METHODS, default="rollout",
                   help="rollout (all layers) or last (last-layer class-token attention)")
    p.add_argument("--panels", action="store_true", help="image, rollout and last-layer maps side by side")
    p.add_argument("--alpha", type=float, default=0.5, help="opacity of the map (default 0.5)")
    p.add_argument("--discard-ratio", type=float, default=0.0, help="rollout: drop this fraction of weakest weights")
    _add_device(p)
    p.set_defaults(func=cmd_attention)

