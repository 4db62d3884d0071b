"""A model behind HTTP: ``vitkit serve MODEL`` (LitServe, dynamic batching) and the page at ``/`` to try it."""

from .server import build_server, serve
from .settings import ServeSettings

__all__ = ["ServeSettings", "build_server", "serve"]
