"""`vitkit weights FILE` (a checkpoint's inventory) and `vitkit convert SRC DST --to FORMAT`."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ..choices import WEIGHT_FORMATS as FORMATS
from ..choices import WRITTEN_FORMATS
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..weights import Conversion

VERIFY_TOLERANCE = 1e-4  # fp32 round trips agree to ~1e-6; more means a broken conversion
EXIT_FAILED = 1  # outputs changed (or a setting that changes them was not kept)
EXIT_METADATA_LOST = 3  # outputs kept, a description of them (class names) lost


def cmd_weights(args: argparse.Namespace) -> int:
    from ..registry import known_configs
    from ..weights import inventory

    if args.limit < 0:
        raise ConfigError(f"--limit {args.limit} is not allowed: expected 0 or more tensors to list (--all lists all).")
    inv = inventory(args.file, format=args.format, known=known_configs())
    inv.problems = [error.for_cli(args.library_options) for error in inv.errors] or inv.problems
    if args.json:
        print(json.dumps(inv.to_dict(), indent=2))
    else:
        print(inv.format_table(limit=None if args.all else args.limit))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from ..registry import known_configs
    from ..weights import convert

    overrides = {k: v for k, v in (("num_classes", args.num_classes), ("img_size", args.img_size)) if v is not None}
    existed = Path(args.dst).expanduser().exists()
    result = convert(args.src, args.dst, to=args.to, format=args.format, verify=args.verify,
                     strict=not args.not_strict, known=known_configs(), **overrides)
    print(f"wrote {result.path} ({result.format})")
    if result.lost is None or result.source_model is None or result.written_model is None:
        return 0
    code, verdict = _verify(args, result)
    if code == EXIT_FAILED and not args.keep_failed:
        if existed:
            verdict += f"; {result.path} existed before and is left as written"
        else:
            _remove(result.path)
            verdict += f"; {result.path} removed (--keep-failed keeps it)"
    if verdict:
        print(verdict)
    return code


def _verify(args: argparse.Namespace, result: Conversion) -> tuple[int, str]:
    """(exit code, the verdict line) of a verified conversion, after printing what it found."""
    from ..processor import compare_on_images, sample_photos

    assert result.lost is not None and result.source_model is not None and result.written_model is not None
    lost = result.lost
    photos = sample_photos()
    diff, same_top1 = compare_on_images(result.source_model, result.written_model, photos)
    for item in lost.outputs:
        print(f"verify: {result.path} loaded on its own ({result.format}) does not keep {item}")
    for item in lost.metadata:
        print(f"verify: warning: {result.path} loaded on its own ({result.format}) does not keep {item} "
              "(the outputs are the same)")
    for item in lost.elsewhere:
        print(f"verify: note: {result.path} runs other input sizes with {item}")
    print(f"verify: {args.src} and {result.path}, each loaded on its own and run on {len(photos)} photos through "
          f"its own preprocessing, max |difference|: {diff:.3g}")
    failed = [f"{len(lost.outputs)} setting(s) that change outputs not kept"] if lost.outputs else []
    if diff > VERIFY_TOLERANCE:
        failed.append(f"outputs differ by more than {VERIFY_TOLERANCE:g}" + ("" if same_top1 else ", top-1 changes"))
    if args.accept_loss and (failed or lost.metadata):
        return 0, f"verify: accepted ({'; '.join(failed + [f'{len(lost.metadata)} description(s) not kept'])})"
    if failed:
        return EXIT_FAILED, f"verify: FAILED ({'; '.join(failed)}); pass --accept-loss to accept the differences"
    if lost.metadata:
        return EXIT_METADATA_LOST, (f"verify: outputs kept, {len(lost.metadata)} description(s) lost (exit "
                                    f"{EXIT_METADATA_LOST}; --accept-loss accepts it)")
    return 0, ""


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


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
    p.set_defaults(func=cmd_weights, library_options={"format": "--format"})

    p = subparsers.add_parser(
        "convert", help="convert a checkpoint to another format",
        description="Load SRC (any supported format), write it to DST as --to FORMAT. With --verify, load DST on "
                    "its own and SRC on its own, run both on real photos through their own preprocessing, print "
                    "the largest output difference and every setting DST does not keep. Exit 1 (FAILED, DST "
                    "removed unless --keep-failed) when outputs change or a setting that changes them is not "
                    f"kept; exit {EXIT_METADATA_LOST} when the outputs are kept but class names are lost; "
                    "--accept-loss exits 0.")
    p.add_argument("src", help="source checkpoint file, folder or hf-hub:ORG/NAME")
    p.add_argument("dst", help="destination file (.safetensors, .npz) or folder")
    p.add_argument("--to", required=True, choices=WRITTEN_FORMATS, help="format to write")
    p.add_argument("--format", "--from", dest="format", choices=FORMATS, help="format of SRC (default: detect)")
    p.add_argument("--verify", action="store_true",
                   help="load DST on its own (as the target library would) and compare it with SRC on real photos, "
                        "each through its own preprocessing, naming what DST does not keep")
    p.add_argument("--accept-loss", action="store_true",
                   help="with --verify: report the differences but exit 0 (and keep DST)")
    p.add_argument("--keep-failed", action="store_true",
                   help="with --verify: keep DST when the verification fails (default: remove it)")
    p.add_argument("--num-classes", type=int, help="a new class count (the head is re-initialised)")
    p.add_argument("--img-size", type=int, help="a new input size (position embeddings resampled)")
    p.add_argument("--not-strict", action="store_true", help="load what fits, initialise the rest")
    p.set_defaults(func=cmd_convert, library_options={"format": "--from", "strict": "--not-strict",
                                                      "num_classes": "--num-classes", "img_size": "--img-size"})
