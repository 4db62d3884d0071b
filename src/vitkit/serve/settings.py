"""The settings of ``vitkit serve``, declared once: each field's type, default, check and help text. The
command-line flags are generated from these fields (``add_flags``), so they cannot drift apart."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from ..choices import INFERENCE_BACKENDS as BACKENDS
from ..choices import INFERENCE_PRECISIONS
from ..errors import ConfigError

HOSTS = ("127.0.0.1", "0.0.0.0", "::")  # what the HTTP framework binds to


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


@dataclass(frozen=True)
class ServeSettings:
    """How ``vitkit serve`` runs a model behind HTTP."""

    host: str = field(default="127.0.0.1", metadata=_help(
        "address to listen on: 127.0.0.1 (this machine only, the default), 0.0.0.0 or :: (every interface)",
        choices=HOSTS))
    port: int = field(default=8000, metadata=_help("TCP port (1024-65535; default 8000)"))
    max_batch_size: int = field(default=16, metadata=_help(
        "most requests run as one forward pass (dynamic batching; 1 turns it off; default 16)"))
    batch_timeout_ms: float = field(default=5.0, metadata=_help(
        "how long a batch waits for more requests before it runs, in milliseconds (default 5)"))
    workers: int = field(default=1, metadata=_help(
        "model worker processes, each holding a copy of the model (default 1)"))
    device: str = field(default="cpu", metadata=_help("torch device for the model: cpu (default), cuda, cuda:N"))
    precision: str = field(default="fp32", metadata=_help(
        "inference precision: fp32 (default), bf16, fp16, int8 or auto", choices=INFERENCE_PRECISIONS))
    backend: str = field(default="eager", metadata=_help(
        "inference runtime: eager (default), compile, onnxruntime or auto", choices=BACKENDS))
    max_body_mb: float = field(default=16.0, metadata=_help(
        "largest request body in MB; a larger one is refused with 413 before it is read (default 16)"))
    timeout_s: float = field(default=30.0, metadata=_help(
        "a request not answered (or whose body has not arrived) within this many seconds gets 504/408 "
        "(default 30)"))
    top_k: int = field(default=5, metadata=_help("classes returned by /predict when ?top_k= is not given (default 5)"))

    def __post_init__(self) -> None:
        check_settings(self)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    def replace(self, **changes: Any) -> ServeSettings:
        return dataclasses.replace(self, **changes)


def _positive(name: str, value: float, what: str) -> None:
    if not value > 0:
        raise ConfigError(f"{name}={value!r} is not allowed: expected a positive {what}.")


def check_settings(s: ServeSettings) -> None:
    """Each setting in range, or a ConfigError naming it, its value and what is allowed."""
    for f in fields(s):
        value = getattr(s, f.name)
        kind = {"int": int, "float": (int, float), "str": str}[str(f.type)]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ConfigError(f"{f.name}={value!r} is not allowed: expected {f.type}.")
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{f.name}={value!r} is not allowed: expected one of {', '.join(choices)}.")
    if not 1024 <= s.port <= 65535:
        raise ConfigError(f"port={s.port} is not allowed: expected 1024-65535 (the HTTP framework refuses "
                          f"privileged ports).")
    _positive("max_batch_size", s.max_batch_size, "number of requests")
    _positive("workers", s.workers, "number of processes")
    _positive("max_body_mb", s.max_body_mb, "size in MB")
    _positive("timeout_s", s.timeout_s, "number of seconds")
    _positive("top_k", s.top_k, "number of classes")
    if s.batch_timeout_ms < 0:
        raise ConfigError(f"batch_timeout_ms={s.batch_timeout_ms} is not allowed: expected 0 or more.")


def add_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per field, with its type, default, choices and help text from the dataclass."""
    for f in fields(ServeSettings):
        kind = {"int": int, "float": float, "str": str}[str(f.type)]
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default,
                            choices=f.metadata.get("choices"), help=f.metadata["help"])


def from_args(args: argparse.Namespace) -> ServeSettings:
    return ServeSettings(**{f.name: getattr(args, f.name) for f in fields(ServeSettings)})
