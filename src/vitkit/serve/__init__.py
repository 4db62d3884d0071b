"""A model behind HTTP: ``vitkit serve MODEL`` (LitServe, dynamic batching) and the page at ``/`` to try it.

The server is imported on first use (PEP 562), so `vitkit serve --help` reads the settings without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["ServeSettings", "build_server", "serve"]
_EXPORTS = {"build_server": "server", "serve": "server", "ServeSettings": "settings"}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    from .server import build_server, serve  # noqa: F401
    from .settings import ServeSettings  # noqa: F401
