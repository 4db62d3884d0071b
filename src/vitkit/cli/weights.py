"""`vitkit weights FILE` (a checkpoint's inventory) and `vitkit convert SRC DST --to FORMAT`."""

from __future__ import annotations

import argparse
import json

from ..errors import ConfigError
from ..weights.families import FORMATS

VERIFY_TOLERANCE = 1e-4  # fp32 round trips agree to ~1e-6; more means a broken conversion


def cmd_weights(args: argparse.Namespace) -> int:
    from ..registry import known_configs
    from ..weights import inventory

    if args.limit < 0:
        raise ConfigError(f"--limit {args.limit} is not allowed: expected 0 or more tensors to list (--all lists all).")
    inv = inventory(args.file, format=args.format, known=known_configs())
    if args.json:
        print(json.dumps(inv.to_dict(), indent=2))
    else:
        print(inv.format_table(limit=None if args.all else args.limit))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from ..registry import known_configs
    from ..weights import convert

    overrides = {k: v for k, v in (("num_classes", args.num_classes), ("img_size", args.img_size)) if v is not None}
    result = convert(args.src, args.dst, to=args.to, format=args.format, verify=args.verify,
                     strict=not args.not_strict, known=known_configs(), **overrides)
    print(f"wrote {result.path} ({result.format})")
    if result.max_diff is None:
        return 0
    print(f"verify: max |difference| of features and outputs, {args.src} vs {result.path}: {result.max_diff:.3g}")
    if result.max_diff > VERIFY_TOLERANCE:
        print(f"verify: FAILED (more than {VERIFY_TOLERANCE:g})")
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "weights", help="list a checkpoint's tensors, format and architecture",
        description="The inventory of any checkpoint (.safetensors, .pth/.bin, .npz, a folder or hf-hub:ID): "
                    "tensor names, shapes and dtypes, parameter count, detected format and architecture.")
    p.add_argument("file", help="checkpoint file, folder or hf-hub:ORG/NAME")
    p.add_argument("--format", choices=FORMATS, help="the checkpoint family, if detection should not guess")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--limit", type=int, default=60, help="tensors to list (default 60)")
    p.add_argument("--all", action="store_true", help="list every tensor")
    p.set_defaults(func=cmd_weights)

    p = subparsers.add_parser(
        "convert", help="convert a checkpoint to another format",
        description="Load SRC (any supported format), write it to DST as --to FORMAT. With --verify, reload "
                    "DST and print the largest output difference against SRC on the same random input.")
    p.add_argument("src", help="source checkpoint file, folder or hf-hub:ORG/NAME")
    p.add_argument("dst", help="destination file (.safetensors, .npz) or folder")
    p.add_argument("--to", required=True, choices=FORMATS, help="format to write")
    p.add_argument("--format", "--from", dest="format", choices=FORMATS, help="format of SRC (default: detect)")
    p.add_argument("--verify", action="store_true", help="reload DST and compare outputs with SRC")
    p.add_argument("--num-classes", type=int, help="a new class count (the head is re-initialised)")
    p.add_argument("--img-size", type=int, help="a new input size (position embeddings resampled)")
    p.add_argument("--not-strict", action="store_true", help="load what fits, initialise the rest")
    p.set_defaults(func=cmd_convert)
