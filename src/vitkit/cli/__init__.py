"""The `vitkit` command: a thin layer mapping each subcommand to one library function.

Each area of the library owns a module here with ``register(subparsers)``; it adds its subcommands
and sets ``func`` on them. ``main`` parses, calls ``func(args)`` and turns a ``VitkitError`` (or an
``OSError`` on a path the user gave) into a one-line message and exit code 2; ``--debug`` adds the
traceback. Usage errors are one line and exit code 2 too.

An error's hints name library options (``strict=False``); a command says them with its own flags: it declares
which library options its flags set with ``set_defaults(library_options={"strict": "--not-strict"})``, and a
hint whose option the command has no flag for is said without it (``VitkitError.for_cli``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

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
    "zero-shot": ("zero_shot", "classify images by class names with SigLIP or CLIP"),
    "train": ("train", "fine-tune a model on an image folder (default: the bundled digits)"),
    "eval": ("train", "accuracy of a model on a data split"),
    "export": ("export", "export a model to ONNX (dynamic batch and size), int8, torch.export or OpenVINO"),
    "optimize": ("export", "write a calibrated int8 model (OpenVINO or ONNX Runtime) with a report against fp32"),
    "bench": ("bench", "time vitkit's inference paths against timm, transformers and ONNX Runtime"),
    "serve": ("serve", "serve a model over HTTP (dynamic batching, a page to try it)"),
}
COMMAND_MODULES = tuple(dict.fromkeys(module for module, _ in COMMANDS.values()))


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (``vitkit CMD: error: ...; see --help``) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser(command: str | None = None, *, lazy: bool = False) -> argparse.ArgumentParser:
    """The parser: every subcommand in full, or with ``lazy`` only ``command``'s (stubs for the others)."""
    from .. import __version__

    parser = Parser(
        prog="vitkit", description="Vision Transformers: build, load, inspect, predict, fine-tune.")
    parser.add_argument("--version", action="version", version=f"vitkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("--debug", action="store_true",
                        help="on an error, print the full message and the Python traceback")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    full = set(COMMAND_MODULES) if not lazy else {COMMANDS[command][0]} if command in COMMANDS else set()
    done: set[str] = set()
    for name, (module, line) in COMMANDS.items():
        if module in full and module not in done:
            importlib.import_module(f"{__name__}.{module}").register(subparsers)
            done.add(module)
        elif module not in full:
            subparsers.add_parser(name, help=line)
    for sub in subparsers.choices.values():  # a hint naming a library option says the command's flag for it
        sub.set_defaults(library_options={**own_flags(sub), **(sub.get_default("library_options") or {})})
    return parser


def own_flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """A command's flags by the option they set (their destination): ``{"out": "--out", ...}``."""
    return {a.dest: a.option_strings[-1] for a in parser._actions
            if a.option_strings and a.dest not in ("help", argparse.SUPPRESS)}


class CliWording(logging.Filter):
    """Says the hints of an error a library log line carries (``logger.warning("skipped: %s", exc)``) with the
    command's flags, as ``cli_message`` does for the error that stops a command."""

    def __init__(self, flags: dict[str, str]) -> None:
        super().__init__()
        self.flags = flags

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, VitkitError) for a in record.args):
            record.args = tuple(a.for_cli(self.flags) if isinstance(a, VitkitError) else a for a in record.args)
        return True


def cli_message(exc: BaseException, args: argparse.Namespace) -> str:
    """An error's message as the command line says it: its hints in the command's flags."""
    if isinstance(exc, VitkitError):
        return exc.for_cli(getattr(args, "library_options", {}))
    return str(exc)


def one_line(text: str) -> str:
    """The first line of an error's message (a mismatch table follows it), with a pointer to the rest."""
    text = text.strip()
    first, _, rest = text.partition("\n")
    return first + (" (--debug shows the details)" if rest.strip() else "")


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand asked for: the first word that is not an option (top-level options take no value)."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line, not only before the subcommand
    argv = [a for a in argv if a != "--debug"]
    try:
        parser = build_parser(_command(argv), lazy=True)  # imports the command's module (torch: ~1 s)
    except KeyboardInterrupt:  # Ctrl-C while starting up: nothing began, nothing to say but that
        print(f"vitkit {_command(argv) or ''}: interrupted while starting", file=sys.stderr)
        return 130
    args = parser.parse_args(argv)
    args.debug = debug
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    wording = CliWording(getattr(args, "library_options", {}))
    handlers = logging.getLogger().handlers
    for handler in handlers:
        handler.addFilter(wording)
    try:
        return _run(args)
    finally:
        for handler in handlers:
            handler.removeFilter(wording)


def _run(args: argparse.Namespace) -> int:
    """The command, its refusals said in one line (exit status 2)."""
    try:
        result = args.func(args)
    # A user's error, or the system refusing a path the user gave (a folder as output, no permission, a
    # full disk): one line and status 2; --debug shows the whole story. Anything else is a bug: traceback.
    except (VitkitError, OSError) as exc:
        if isinstance(exc, BrokenPipeError):
            # the reader went away (e.g. `vitkit predict ... | head`): stop quietly, as Unix tools do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141
        if args.debug:
            traceback.print_exc()
        message = cli_message(exc, args)
        message = message if args.debug else one_line(message)
        if isinstance(exc, OSError) and not isinstance(exc, VitkitError):
            message = f"{exc.strerror or exc}: {exc.filename!r}" if exc.filename else str(exc)
        print(f"vitkit {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vitkit {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)
