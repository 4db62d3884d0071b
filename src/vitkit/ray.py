"""Bulk predict and features on Ray Data, for jobs bigger than one machine.

The file list (or a Parquet column of paths) becomes a Ray Dataset; ``map_batches`` sends its batches through an
actor pool whose actors each hold the model (``BatchPredictor``, ``BatchFeatures``: use them in a Ray pipeline of
your own); the rows are written as Parquet, one per image. An actor that dies (a lost node, a killed process) is
restarted and its batch retried, so the job is not lost. An image that cannot be read gets a row with ``error`` set,
as ``vitkit.predict`` reports it on one machine.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .data.images import list_images
from .errors import ConfigError, DataError, MissingDependencyError, OutputError, keyword
from .features import check_pool, extract_features
from .predict import predict
from .runtime import ModelSpec, resolve_model

logger = logging.getLogger(__name__)

def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("--engine ray needs Ray Data: pip install 'vitkit[ray]'.") from None
    return ray


class _Holder:
    """An actor's model, loaded once when the actor starts."""

    def __init__(self, model: ModelSpec, *, weights: Any = None, device: str | None = None) -> None:
        self.net = resolve_model(model, weights=weights, device=device).eval()


class BatchPredictor(_Holder):
    """``map_batches`` callable: a batch with a ``path`` column -> path, predictions (index, label, probability
    each, most probable first) and error (None unless the image could not be read), as ``vitkit.predict`` gives."""

    def __init__(self, model: ModelSpec, *, weights: Any = None, top_k: int = 5, labels: Any = None,
                 device: str | None = None) -> None:
        super().__init__(model, weights=weights, device=device)
        self.top_k, self.labels = top_k, labels

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        paths = [str(p) for p in batch["path"]]
        results = predict(paths, self.net, top_k=self.top_k, labels=self.labels, batch_size=len(paths))
        rows = [r.to_dict() for r in results]
        return _table({"path": paths, "predictions": [r["predictions"] for r in rows],
                       "error": [r.get("error") for r in rows]})


class BatchFeatures(_Holder):
    """``map_batches`` callable: a batch with a ``path`` column -> path, features (the pooled vector, as
    ``vitkit.extract_features`` gives it; None for an unreadable image) and error."""

    def __init__(self, model: ModelSpec, *, weights: Any = None, pool: str = "default",
                 device: str | None = None) -> None:
        super().__init__(model, weights=weights, device=device)
        self.pool = check_pool(self.net, pool)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        paths = [str(p) for p in batch["path"]]
        try:
            result = extract_features(paths, self.net, pool=self.pool, batch_size=len(paths), num_workers=0)
            found = dict(zip(result.files, result.features))
            errors = dict(result.skipped)
        except DataError:  # none of them could be read
            found, errors = {}, _errors_of(paths)
        return _table({"path": paths, "features": [found[p].tolist() if p in found else None for p in paths],
                       "error": [errors.get(p) for p in paths]})


def _table(columns: dict[str, list[Any]]) -> Any:
    """The batch as an Arrow table with fixed column types (a batch whose errors are all None must still write an
    ``error`` column of strings, or the job's Parquet files would disagree on its type)."""
    import pyarrow as pa

    prediction = pa.struct([("index", pa.int64()), ("label", pa.string()), ("probability", pa.float64())])
    types = {"path": pa.string(), "error": pa.string(), "predictions": pa.list_(prediction),
             "features": pa.list_(pa.float32())}
    return pa.table({name: pa.array(values, type=types[name]) for name, values in columns.items()})


def _errors_of(paths: Sequence[str]) -> dict[str, str]:
    """Why each of ``paths`` cannot be read (``predict`` reports it per image)."""
    from .data.images import load_image
    from .errors import ImageError

    out = {}
    for p in paths:
        try:
            load_image(p)
            out[p] = "could not be read"
        except ImageError as exc:
            out[p] = str(exc)
    return out


@dataclass
class JobResult:
    """What a bulk job wrote: the Parquet folder, how many rows, and the images that could not be read."""

    out: Path
    rows: int
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _paths(inputs: Sequence[str | os.PathLike], column: str) -> Any:
    """The Ray Dataset of paths: one Parquet file's ``column``, or the image files in ``inputs``."""
    ray = _ray()
    if len(inputs) == 1 and str(inputs[0]).endswith(".parquet"):
        ds = ray.data.read_parquet(str(inputs[0]), columns=[column])
        return ds.rename_columns({column: "path"}) if column != "path" else ds
    return ray.data.from_items([{"path": str(p)} for p in list_images(inputs)])


def run_job(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, *, task: str, model: str,
            weights: Any = None, address: str | None = None, num_workers: int = 2, batch_size: int = 32,
            top_k: int = 5, labels: Any = None, pool: str = "default", column: str = "path",
            device: str | None = None) -> JobResult:
    """Run ``task`` ('predict' or 'features') over ``inputs`` on Ray, writing Parquet to the folder ``out``.

    ``address``: a running Ray cluster ('auto', 'ray://HOST:10001', ...); None starts a local instance.
    ``num_workers``: the actors, each holding a copy of the model.
    """
    if task not in ("predict", "features"):
        raise ConfigError(f"task={task!r} is not supported: expected 'predict' or 'features'.")
    for name, value in (("num_workers", num_workers), ("batch_size", batch_size), ("top_k", top_k)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}={value!r} is not allowed: expected a positive whole number.")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        where = keyword("out", str(out))
        raise OutputError(f"{where} already exists; the Parquet files of a Ray job go to a new (or empty) folder.",
                          hints=(where,))
    resolve_model(model, weights=weights, device="meta") if weights else None  # a bad spec fails here, once
    ray = _ray()
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=max(2, num_workers), include_dashboard=False, log_to_driver=False)
    ds = _paths(inputs, column)
    worker, kwargs = (BatchPredictor, {"top_k": top_k, "labels": labels}) if task == "predict" else \
        (BatchFeatures, {"pool": pool})
    # Ray Data's actor pool restarts an actor that dies and retries its batch (max_restarts and max_task_retries
    # default to -1 for actors there), so a lost process costs its batch's time, not the job
    mapped = ds.map_batches(worker, fn_constructor_kwargs={"model": model, "weights": weights, "device": device,
                                                           **kwargs},
                            batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=num_workers), num_cpus=1)
    mapped.write_parquet(str(out))
    rows = read_rows(out, columns=["path", "error"])
    return JobResult(out=out, rows=len(rows), skipped=[(r["path"], r["error"]) for r in rows if r["error"]])


def read_rows(out: str | os.PathLike, *, columns: list[str] | None = None) -> list[dict[str, Any]]:
    """The rows of a job's Parquet folder (read with pyarrow: no Ray needed), sorted by path."""
    import pyarrow.parquet as pq

    rows = pq.read_table(str(out), columns=columns).to_pylist()
    return sorted(rows, key=lambda r: r["path"])


__all__ = ["BatchFeatures", "BatchPredictor", "JobResult", "read_rows", "run_job"]
