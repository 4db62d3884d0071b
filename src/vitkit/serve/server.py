"""``vitkit serve``: a model behind HTTP on LitServe, with dynamic batching, a page to try it, metrics, and a
graceful stop.

One ``ModelWorker`` (a LitAPI) per worker process holds the model; every task endpoint feeds the same request
queue, so requests of different tasks share the batches and the model is loaded once per worker. LitServe gives
the batching, ``/health`` (503 until every worker has loaded and warmed up its model: the port opens at once,
and requests sent meanwhile wait in the queue), the request timeout (504) and FastAPI's OpenAPI page (``/docs``,
``/openapi.json``). Added here: the endpoints' own request parsing (``http.read_request``), the body limits and
request metrics (``http.Guard``), ``/metrics``, the page at ``/``, and SIGTERM: stop accepting, finish the
requests in flight, then exit 0.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from typing import Any

import torch

from ..errors import ConfigError, MissingDependencyError, keyword
from ..graphmodel import is_graph_file
from ..runtime import load_model, pick_device, pretrained_cfg_of
from .settings import ServeSettings

logger = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 30.0  # how long SIGTERM waits for the requests in flight


def _litserve() -> Any:
    try:
        import litserve
    except ImportError:
        raise MissingDependencyError("vitkit serve needs LitServe: pip install 'vitkit[serve]'.") from None
    return litserve


def build_server(model: Any, settings: ServeSettings, *, weights: Any = None, labels: str | None = None) -> Any:
    """The LitServer for ``model`` (any model spec ``vitkit.predict`` takes), not started."""
    ls = _litserve()
    from fastapi import Request
    from fastapi.responses import HTMLResponse, Response
    from litserve.server import RegularRequestHandler

    from . import metrics
    from .http import Guard, read_request
    from .worker import TASKS, ModelWorker

    class TaskHandler(RegularRequestHandler):
        """LitServe's request handler, with the payload read by ``read_request`` for one task."""

        def __init__(self, lit_api: Any, server: Any, task: str) -> None:
            super().__init__(lit_api, server)
            self.task = task

        async def _prepare_request(self, request: Any, request_type: Any) -> dict[str, Any]:
            return await read_request(request, self.task, settings, image_text=worker.image_text)

    class Server(ls.LitServer):
        def register_endpoints(self) -> None:
            page = importlib.resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
            self.app.add_api_route("/", lambda: HTMLResponse(page), methods=["GET"], include_in_schema=False)
            self.app.add_api_route("/metrics", lambda: Response(metrics.exposition(), media_type=(
                "text/plain; version=0.0.4; charset=utf-8")), methods=["GET"], summary="Prometheus metrics")
            self._register_internal_endpoints()  # /health, /info (its own '/' comes after ours, so ours answers)
            self._callback_runner.trigger_event("on_server_start", litserver=self)
            for task in TASKS:
                handler = TaskHandler(self.lit_api, self, task)
                self.app.add_api_route(f"/{task}", _endpoint(handler, Request), methods=["POST"],
                                       summary=_SUMMARIES[task], openapi_extra=_openapi(task))

        def _init_manager(self, *args: Any, **kwargs: Any) -> Any:
            # the manager process holds the queues: it must outlive a SIGTERM sent to the whole process group
            # (systemd, `timeout`), so it starts with SIGTERM ignored and is stopped by LitServe's shutdown
            handler = signal.signal(signal.SIGTERM, signal.SIG_IGN)
            try:
                return super()._init_manager(*args, **kwargs)
            finally:
                signal.signal(signal.SIGTERM, handler)

        def verify_worker_status(self) -> None:
            # LitServe waits here for a worker's setup before it opens the port; vitkit opens it at once, so
            # that /health answers 503 while the model loads and warms up (requests sent meanwhile wait in the
            # queue). A worker whose setup fails stops the server, and ``serve`` reports it.
            threading.Thread(target=self._watch_workers, name="vitkit-serve-startup", daemon=True).start()

        def _watch_workers(self) -> None:
            from litserve.utils import WorkerSetupStatus

            while True:
                states = list(self.workers_setup_status.values())
                if WorkerSetupStatus.ERROR in states:
                    self.startup_failed = True
                    self._shutdown_event.set()
                    return
                if states and all(state == WorkerSetupStatus.READY for state in states):
                    logger.info("every model worker is ready")
                    return
                time.sleep(0.05)

        def _start_server(self, *args: Any, **kwargs: Any) -> Any:
            self.http_processes = super()._start_server(*args, **kwargs)  # kept for the graceful stop
            return self.http_processes

    worker = ModelWorker(model, settings=settings, weights=weights, labels=labels)
    accelerator = "cuda" if settings.device.startswith("cuda") else "cpu"
    return Server(worker, accelerator=accelerator, devices=1, workers_per_device=settings.workers,
                  timeout=settings.timeout_s, middlewares=[(Guard, {"max_body_bytes": settings.max_body_bytes,
                                                                    "body_timeout_s": settings.timeout_s})])


def _endpoint(handler: Any, request_type: Any) -> Any:
    async def endpoint(request: Any) -> Any:
        return await handler.handle_request(request, request_type)
    endpoint.__annotations__ = {"request": request_type}  # FastAPI passes the request itself (not a string)
    return endpoint


_SUMMARIES = {"predict": "Top-k classes of an image (?top_k=)",
              "features": "The pooled feature vector of an image (?pool=default|token|avg|map)",
              "attention": "The attention map over an image as a PNG overlay, base64 (?method=rollout|last)",
              "zero-shot": "The most probable of the labels sent (?labels=a,b,c&template=&top_k=), image-text models"}


def _openapi(task: str) -> dict[str, Any]:
    """The request body in the OpenAPI page: a multipart field 'image' or the raw image bytes."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    fields: dict[str, Any] = {"image": {"type": "string", "format": "binary"}}
    if task == "zero-shot":
        fields.update(labels={"type": "string", "description": "class names, separated by commas"},
                      template={"type": "array", "items": {"type": "string"}}, top_k={"type": "integer"})
    form = {"schema": {"type": "object", "properties": fields, "required": ["image"]}}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": form, "image/jpeg": binary,
                                                          "image/png": binary, "application/octet-stream": binary}}}


def _drain_on_sigterm(server: Any) -> None:
    """SIGTERM: the HTTP processes stop accepting and finish what is in flight (uvicorn's graceful shutdown),
    the model workers (which ignore SIGTERM, so a signal to the whole process group cannot cut a batch short)
    are stopped once nothing is left for them, and LitServe's own shutdown makes ``run`` return."""
    main = os.getpid()

    def drain() -> None:
        procs = list(getattr(server, "http_processes", {}).values())
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.join(timeout=DRAIN_TIMEOUT_S)
        for proc in getattr(server, "inference_workers", []):
            proc.kill()
        server._shutdown_event.set()

    def on_term(signum: int, frame: Any) -> None:
        if os.getpid() != main:  # an HTTP process (forked) that uvicorn has drained, raising it again: done
            os._exit(0)
        logger.info("SIGTERM: finishing the requests in flight, then stopping")
        threading.Thread(target=drain, name="vitkit-serve-drain", daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)


def _spec_name(model: Any) -> str:
    return f"the given {type(model).__name__}" if isinstance(model, torch.nn.Module) else repr(str(model))


def _check_graph_settings(model: str, settings: ServeSettings, *, weights: Any) -> None:
    """An exported graph (``.xml``, ``.onnx``) runs on the CPU in the precision it was written in."""
    given = [keyword(name, value) for name, value, default in (
        ("precision", settings.precision, "fp32"), ("backend", settings.backend, "eager"),
        ("device", settings.device, "cpu"), ("weights", weights, None)) if value != default]
    if given:
        raise ConfigError(f"{model!r} is an exported graph: it runs on the CPU as it was written, so "
                          f"{', '.join(h.text for h in given)} does not apply to it; drop it (optimize the model "
                          f"again for another precision: `vitkit optimize MODEL --precision P --out FILE`).",
                          hints=given)


def serve(model: Any, settings: ServeSettings | None = None, *, weights: Any = None, labels: str | None = None,
          log_level: str = "warning") -> None:
    """Serve ``model`` until SIGTERM or Ctrl-C (blocking)."""
    from .zero_shot import check_image_text_options, is_image_text

    settings = settings or ServeSettings()
    if is_image_text(model):
        check_image_text_options(settings, weights=weights, labels=labels)
    elif not isinstance(model, torch.nn.Module) and is_graph_file(model):
        _check_graph_settings(str(model), settings, weights=weights)
        pretrained_cfg_of(model)  # a missing or damaged description: one error here
    elif not isinstance(model, torch.nn.Module):  # a bad name or file: one error here, not a worker's traceback
        pretrained_cfg_of(model) if weights is None else load_model(model, weights=weights, device="meta")
    pick_device(settings.device)
    metrics_dir = tempfile.mkdtemp(prefix="vitkit-serve-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # before prometheus_client is imported anywhere
    try:
        server = build_server(model, settings, weights=weights, labels=labels)
        _drain_on_sigterm(server)
        server.run(host=settings.host, port=settings.port, num_api_servers=1, log_level=log_level,
                   generate_client_file=False)
        if getattr(server, "startup_failed", False):
            raise ConfigError(f"vitkit serve: the model worker could not load {_spec_name(model)} (its error is "
                              "logged above); check that `vitkit predict` runs it with the same options.")
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
