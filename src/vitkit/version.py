"""The package version, on the lowest floor so that any module (e.g. the weight writers) can read it."""

__version__ = "0.1.0"
