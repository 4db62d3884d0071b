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
    from ..processor import compare_on_images, sample_photos
    from ..registry import known_configs
    from ..weights import convert

    overrides = {k: v for k, v in (("num_classes", args.num_classes), ("img_size", args.img_size)) if v is not None}
    result = convert(args.src, args.dst, to=args.to, format=args.format, verify=args.verify,
                     strict=not args.not_strict, known=known_configs(), **overrides)
    print(f"wrote {result.path} ({result.format})")
    if result.source_model is None or result.written_model is None:
        return 0
    photos = sample_photos()
    diff, same_top1 = compare_on_images(result.source_model, result.written_model, photos)
    for item in result.lost:
        print(f"verify: {result.path} loaded on its own ({result.format}) does not keep {item}")
    for item in result.elsewhere:
        print(f"verify: note: {result.path} runs other input sizes with {item}")
    problems = [f"{len(result.lost)} setting(s) not kept"] if result.lost else []
    if diff > VERIFY_TOLERANCE:
        problems.append(f"outputs differ by more than {VERIFY_TOLERANCE:g}" + ("" if same_top1 else ", top-1 changes"))
    print(f"verify: {args.src} and {result.path}, each loaded on its own and run on {len(photos)} photos through "
          f"its own preprocessing, max |difference|: {diff:.3g}")
    if not problems:
        return 0
    if args.accept_loss:
        print(f"verify: accepted ({'; '.join(problems)})")
        return 0
    print(f"verify: FAILED ({'; '.join(problems)}); pass --accept-loss to accept the differences")
    return 1


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
        description="Load SRC (any supported format), write it to DST as --to FORMAT. With --verify, load DST on "
                    "its own and SRC on its own, run both on real photos through their own preprocessing, print "
                    "the largest output difference and every setting DST does not keep (exit 1 unless "
                    "--accept-loss).")
    p.add_argument("src", help="source checkpoint file, folder or hf-hub:ORG/NAME")
    p.add_argument("dst", help="destination file (.safetensors, .npz) or folder")
    p.add_argument("--to", required=True, choices=FORMATS, help="format to write")
    p.add_argument("--format", "--from", dest="format", choices=FORMATS, help="format of SRC (default: detect)")
    p.add_argument("--verify", action="store_true",
                   help="load DST on its own (as the target library would) and compare it with SRC on real photos, "
                        "each through its own preprocessing; exit 1 naming what DST does not keep")
    p.add_argument("--accept-loss", action="store_true",
                   help="with --verify: report the differences but exit 0")
    p.add_argument("--num-classes", type=int, help="a new class count (the head is re-initialised)")
    p.add_argument("--img-size", type=int, help="a new input size (position embeddings resampled)")
    p.add_argument("--not-strict", action="store_true", help="load what fits, initialise the rest")
    p.set_defaults(func=cmd_convert)
