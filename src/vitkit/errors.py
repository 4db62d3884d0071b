"""Errors a user can cause. Each message names the thing, the bad value, what was expected and what to do.

The hierarchy, so callers can catch by category (every class is a ``VitkitError``)::

    VitkitError                      anything vitkit refuses because of its input
    +-- ConfigError (ValueError)     a bad argument or configuration value: a field of the wrong type, a
    |   |                            size beyond its limit, a misspelt option name, an index out of range
    |   +-- OutputError              an output location that cannot be written (a folder, a device, /proc)
    +-- InputSizeError (ValueError)  an input tensor or image batch whose shape (or dtype) the model cannot take
    +-- UnknownModelError (KeyError) a model name the registry does not know
    +-- CheckpointError              a weight source that cannot be read or does not fit the model
    |   +-- CorruptCheckpointError   truncated, damaged (CRC, header, sizes) or non-finite contents
    |   +-- UnsafeCheckpointError    refused on principle: pickled code, paths leaving the checkpoint folder
    +-- ImageError                   an image file that cannot be read or decoded (or is too large)
    +-- DataError                    a dataset folder, file list or run folder that is unusable
    +-- ExportError                  exporting to another runtime failed
    +-- MissingDependencyError       an optional package a feature needs is not installed (also ImportError)

The CLI prints any ``VitkitError`` as one line and exits with status 2.

Advice that names an option is a ``Hint``: the message carries the library's wording (``strict=False``), and
the CLI says it with the flag its command has for that option (``--not-strict``), or drops it where the
command has none, so every hint names an option of the entry point the user called. A setting named inside a
sentence (``out='runs/x'`` in Python, ``--out 'runs/x'`` on the command line) is a ``keyword`` hint.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Hint:
    """What to do, in the words of the library and of the command line.

    ``text``: the library's wording, as it stands in the message (with its leading connector, e.g. ", or pass
    strict=False to ..."). ``option``: the library option it names, if the CLI needs a flag for it; ``cli``: the
    command line's wording, ``{flag}`` standing for the command's flag for ``option``; ``cli_without``: what the
    CLI says when the command has no such flag ('' drops the advice).
    """

    text: str
    option: str | None = None
    cli: str = ""
    cli_without: str = ""

    def __str__(self) -> str:  # a hint stands in an f-string message in the library's wording
        return self.text

    def for_cli(self, flags: Mapping[str, str]) -> str:
        if self.option is None:
            return self.cli
        flag = flags.get(self.option)
        return self.cli.format(flag=flag) if flag else self.cli_without


_NO_VALUE = object()


def keyword(name: str, value: object = _NO_VALUE, *, typed: str | None = None) -> Hint:
    """A setting named inside a message: ``name=value`` (``name=`` without a value) in Python, the command's flag
    on a command line, followed by ``typed`` (the value as typed there; default: the value, none for ``True``).

    Where a command has no flag for ``name``, the CLI says "the name setting"."""
    text = f"{name}=" if value is _NO_VALUE else f"{name}={value!r}"
    if typed is None:
        typed = "" if value is _NO_VALUE or value is True else repr(value) if isinstance(value, str) else str(value)
    return Hint(text, option=name, cli="{flag}" + (f" {typed}" if typed else ""), cli_without=f"the {name} setting")


class VitkitError(Exception):
    """Base class of every error vitkit raises for bad input.

    ``hints``: the pieces of the message that name library options (``Hint``); ``for_cli`` words them for a
    command line."""

    def __init__(self, *args: object, hints: Sequence[Hint] = ()) -> None:
        super().__init__(*args)
        self.hints = tuple(hints)

    def for_cli(self, flags: Mapping[str, str]) -> str:
        """The message with each hint said for a command whose flags for library options are ``flags``
        (option name -> flag, e.g. ``{"strict": "--not-strict"}``)."""
        return reword(str(self), getattr(self, "hints", ()), flags)

    def reworded(self, texts: Mapping[Hint, str]) -> VitkitError:
        """This error as another entry point says it: each hint in ``texts`` in that library wording instead (its
        command-line wording stays); the error itself when it has none of them."""
        if not any(hint in texts for hint in self.hints):
            return self
        message, hints = str(self), []
        for hint in self.hints:
            if hint in texts:
                message = message.replace(hint.text, texts[hint])
                hint = dataclasses.replace(hint, text=texts[hint])
            hints.append(hint)
        error = copy.copy(self)
        error.args, error.hints = (message,), tuple(hints)
        return error


def reword(text: str, hints: Sequence[Hint], flags: Mapping[str, str]) -> str:
    """``text`` (an error's message, also one kept as a string, e.g. a skipped image's) with each of ``hints`` said
    for a command whose flags for library options are ``flags``."""
    # the longest first, so that `resume=` never cuts into `resume='auto'`; a hint that begins with a word
    # stands as a word (`out=` is not the end of `layout=`)
    for hint in sorted(hints, key=lambda h: -len(h.text)):
        start = r"(?<![\w-])" if hint.text[:1].isalnum() else ""
        text = re.sub(start + re.escape(hint.text), lambda _, h=hint: h.for_cli(flags), text)
    first, newline, rest = text.partition("\n")  # hints stand in the first line; a table may follow
    return _tidy(first) + newline + rest


def _tidy(line: str) -> str:
    """Spacing and punctuation left behind where a hint was dropped (`` .``, ``..``, double spaces)."""
    line = re.sub(r" {2,}", " ", line)
    line = re.sub(r" +([.,;)])(?=[\s.,;)]|$)", r"\1", line)  # not before a file suffix: 'in .npy or .png'
    return re.sub(r"(?<!\.)\.\.(?!\.)", ".", line).strip()


class ConfigError(VitkitError, ValueError):
    """An argument or configuration field holds a value that is not allowed (type, range or name)."""


class OutputError(ConfigError):
    """An output path cannot be written: a folder, a device such as /dev/null, a system folder."""


class UnknownModelError(VitkitError, KeyError):
    """A model name is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InputSizeError(VitkitError, ValueError):
    """An input tensor has a shape (or a dtype) the model cannot take."""


class CheckpointError(VitkitError):
    """A weight file cannot be read, is corrupt, or does not fit the model."""


class CorruptCheckpointError(CheckpointError):
    """A weight file is truncated or damaged: a failed CRC, an inconsistent header, NaN/Inf values."""


class UnsafeCheckpointError(CheckpointError):
    """A weight source is refused on principle: it holds pickled objects or names files outside its folder."""


class ImageError(VitkitError):
    """An image file cannot be read or decoded."""


class DataError(VitkitError):
    """A dataset folder or data argument is unusable."""


class ExportError(VitkitError):
    """Exporting a model to another runtime (ONNX) failed."""


class MissingDependencyError(VitkitError, ImportError):
    """An optional dependency a feature needs is not installed."""
