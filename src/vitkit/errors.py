"""Errors a user can cause. Each message names the thing, what was expected and what to do."""

from __future__ import annotations


class VitkitError(Exception):
    """Base class of every error vitkit raises for bad input."""


class ConfigError(VitkitError, ValueError):
    """A model configuration field holds a value that is not allowed."""


class UnknownModelError(VitkitError, KeyError):
    """A model name is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InputSizeError(VitkitError, ValueError):
    """An input tensor has a shape the model cannot take."""


class CheckpointError(VitkitError):
    """A weight file cannot be read, is corrupt, or does not fit the model."""


class ImageError(VitkitError):
    """An image file cannot be read or decoded."""


class DataError(VitkitError):
    """A dataset folder or data argument is unusable."""
