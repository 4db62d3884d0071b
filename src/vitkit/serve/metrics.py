"""The server's Prometheus metrics, shared by its processes (the HTTP server and the model workers) through
prometheus_client's multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` must be set before this module is first
imported (``vitkit.serve.server.serve`` does it), and ``/metrics`` collects every process's files."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

ENDPOINTS = ("/predict", "/features", "/attention", "/zero-shot", "/health", "/metrics", "/")

REQUESTS = Counter("vitkit_serve_requests_total", "HTTP requests answered, by endpoint and status code",
                   ["endpoint", "code"])
ERRORS = Counter("vitkit_serve_errors_total", "HTTP requests answered with a 4xx or 5xx status, by endpoint and code",
                 ["endpoint", "code"])
LATENCY = Histogram("vitkit_serve_request_seconds", "time from a request's arrival to its answer, by endpoint",
                    ["endpoint"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
BATCH_SIZE = Histogram("vitkit_serve_batch_size", "requests per forward pass of a model worker",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128))


def endpoint_label(path: str) -> str:
    """A path as a metric label: a known endpoint, else 'other' (so a scan of random URLs adds no series)."""
    return path if path in ENDPOINTS else "other"


def record(path: str, code: int, seconds: float) -> None:
    label = endpoint_label(path)
    REQUESTS.labels(label, str(code)).inc()
    if code >= 400:
        ERRORS.labels(label, str(code)).inc()
    LATENCY.labels(label).observe(seconds)


def exposition() -> bytes:
    """Every process's metrics in Prometheus text format."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
        return generate_latest(registry)
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY)
