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

# Modules that add subcommands (in help order).
COMMAND_MODULES = ("models", "weights", "use", "train", "export", "bench")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="vitkit", description="Vision Transformers: build, load, inspect, predict, fine-tune.")
    parser.add_argument("--version", action="version", version=f"vitkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
