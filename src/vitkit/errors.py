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
command has none, so every hint names an option of the entry point the user called.
"""

from __future__ import annotations

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

    def for_cli(self, flags: Mapping[str, str]) -> str:
        if self.option is None:
            return self.cli
        flag = flags.get(self.option)
        return self.cli.format(flag=flag) if flag else self.cli_without


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
        text = str(self)
        for hint in getattr(self, "hints", ()):
            text = text.replace(hint.text, hint.for_cli(flags))
        first, newline, rest = text.partition("\n")  # hints stand in the first line; a table may follow
        return _tidy(first) + newline + rest


def _tidy(line: str) -> str:
    """Spacing and punctuation left behind where a hint was dropped (`` .``, ``..``, double spaces)."""
    line = re.sub(r" {2,}", " ", line)
    line = re.sub(r" +([.,;)])", r"\1", line)
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
