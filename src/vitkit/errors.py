"""Errors a user can cause. Each message names the thing, the bad value, what was expected and what to do.

The hierarchy, so callers can catch by category (every class is a ``VitkitError``)::

    VitkitError                      anything vitkit refuses because of its input
    +-- ConfigError (ValueError)     a bad argument or configuration value: a field of the wrong type, a
    |   |                            size beyond its limit, a misspelt option name, an index out of range
    |   +-- OutputError              an output location that cannot be written (a folder, a device, /proc)
    +-- InputSizeError (ValueError)  an input tensor or image batch whose shape the model cannot take
    +-- UnknownModelError (KeyError) a model name the registry does not know
    +-- CheckpointError              a weight source that cannot be read or does not fit the model
    |   +-- CorruptCheckpointError   truncated, damaged (CRC, header, sizes) or non-finite contents
    |   +-- UnsafeCheckpointError    refused on principle: pickled code, paths leaving the checkpoint folder
    +-- ImageError                   an image file that cannot be read or decoded (or is too large)
    +-- DataError                    a dataset folder, file list or run folder that is unusable
    +-- ExportError                  exporting to another runtime failed
    +-- MissingDependencyError       an optional package a feature needs is not installed (also ImportError)

The CLI prints any ``VitkitError`` as one line and exits with status 2.
"""

from __future__ import annotations


class VitkitError(Exception):
    """Base class of every error vitkit raises for bad input."""


class ConfigError(VitkitError, ValueError):
    """An argument or configuration field holds a value that is not allowed (type, range or name)."""


class OutputError(ConfigError):
    """An output path cannot be written: a folder, a device such as /dev/null, a system folder."""


class UnknownModelError(VitkitError, KeyError):
    """A model name is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InputSizeError(VitkitError, ValueError):
    """An input tensor has a shape the model cannot take."""


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
