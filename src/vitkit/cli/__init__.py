"""The `vitkit` command: a thin layer mapping each subcommand to one library function.

Each area of the library owns a module here with ``register(subparsers)``; it adds its subcommands
and sets ``func`` on them. ``main`` parses, calls ``func(args)`` and turns a ``VitkitError`` into a
one-line message and exit code 2 instead of a stack trace.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from ..errors import VitkitError

# Each subcommand: the module here that registers it, and its line in `vitkit --help` (in help order). Only
# the module of the command being run is imported (the others get a one-line stub parser), so `vitkit --help`
# and a mistyped command answer without importing torch: start-up time, see benchmarks/bench_cli_startup.py.
COMMANDS = {
    "models": ("models", "list model names (all, or those matching a word or pattern)"),
    "weights": ("weights", "list a checkpoint's tensors, format and architecture"),
    "convert": ("weights", "convert a checkpoint to another format"),
    "predict": ("use", "top-k classes of images (files or folders)"),
    "features": ("use", "extract features of many images to .npy/.safetensors"),
    "inspect": ("use", "structure, output shapes, parameters and MACs of a model"),
    "attention": ("use", "attention map of an image as a PNG overlay"),
    "train": ("train", "fine-tune a model on an image folder (default: the bundled digits)"),
    "eval": ("train", "accuracy of a model on a data split"),
    "export": ("export", "export a model to ONNX (dynamic batch and size), int8, or torch.export"),
    "bench": ("bench", "time vitkit's inference paths against timm, transformers and ONNX Runtime"),
}
COMMAND_MODULES = tuple(dict.fromkeys(module for module, _ in COMMANDS.values()))


def build_parser(command: str | None = None, *, lazy: bool = False) -> argparse.ArgumentParser:
    """The parser: every subcommand in full, or with ``lazy`` only ``command``'s (stubs for the others)."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="vitkit", description="Vision Transformers: build, load, inspect, predict, fine-tune.")
    parser.add_argument("--version", action="version", version=f"vitkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    full = set(COMMAND_MODULES) if not lazy else {COMMANDS[command][0]} if command in COMMANDS else set()
    done: set[str] = set()
    for name, (module, line) in COMMANDS.items():
        if module in full and module not in done:
            importlib.import_module(f"{__name__}.{module}").register(subparsers)
            done.add(module)
        elif module not in full:
            subparsers.add_parser(name, help=line)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand asked for: the first word that is not an option (top-level options take no value)."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command(argv), lazy=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except VitkitError as exc:
        print(f"vitkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vitkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (e.g. `vitkit predict ... | head`): stop quietly, as Unix tools do
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return int(result or 0)
