"""A runner where a model goes: ``StandIn`` carries a callable (an optimized runner, a compiled OpenVINO IR, an
ONNX Runtime session) together with the model's description (classes, preprocessing, config, name), so that
``vitkit.predict`` runs it as it runs the model.

``load_graph_model`` reads a graph vitkit wrote (an OpenVINO IR ``.xml`` with its ``.bin``, or an ``.onnx``) and
the JSON description written beside it (``<name>.vitkit.json``, e.g. ``m.xml.vitkit.json``); no torch model is
needed for the graph, and nothing in the files is executed as code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import PretrainedCfg, ViTConfig
from .errors import CheckpointError, ConfigError, MissingDependencyError, VitkitError
from .fileio import atomic_write
from .model import name_of, pretrained_cfg_of_model
from .weights.validate import read_json_file

GRAPH_SUFFIXES = (".xml", ".onnx")
DESCRIPTION_SUFFIX = ".vitkit.json"
DESCRIPTION_FORMAT = "vitkit-graph"
DESCRIPTION_VERSION = 1
#: OpenVINO's inference precision hint for each precision a description may record
OV_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": None}


class StandIn(torch.nn.Module):
    """``forward`` is ``fn``; ``num_classes``, ``pretrained_cfg``, ``config`` and ``model_name`` are the model's."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], *, num_classes: int, pretrained_cfg: Any,
                 config: Any, model_name: str | None, device: torch.device | str = "cpu",
                 description: str = "", feature_dim: int | None = None) -> None:
        super().__init__()
        self.fn, self.description, self.feature_dim = fn, description, feature_dim
        self.num_classes, self.pretrained_cfg, self.config, self.model_name = (
            num_classes, pretrained_cfg, config, model_name)
        self.register_buffer("device_marker", torch.empty(0, device=device), persistent=False)

    @classmethod
    def of(cls, fn: Callable[[torch.Tensor], torch.Tensor], model: torch.nn.Module) -> StandIn:
        """``fn`` standing where ``model`` goes (on the model's device)."""
        device = next((t.device for t in (*model.parameters(), *model.buffers())), torch.device("cpu"))
        return cls(fn, num_classes=int(getattr(model, "num_classes", 0) or 0),
                   pretrained_cfg=pretrained_cfg_of_model(model), config=getattr(model, "config", None),
                   model_name=name_of(model), device=device, description=repr(fn))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output (logits, or pooled features for a headless model)."""
        out = self._run(x)
        return out[:, :self.num_classes] if self.feature_dim is not None and self.num_classes else out

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled features the classifier reads (``forward_head(pre_logits=True)``), for a graph that has them."""
        if self.feature_dim is None:
            raise ConfigError(f"{self.model_name!r} ({self.description}) gives the model's output only, not its "
                              f"features; use the model itself for features.")
        out = self._run(x)
        if out.shape[1] != self.num_classes + self.feature_dim:
            raise CheckpointError(f"{self.model_name!r} ({self.description}) gives {out.shape[1]} outputs per image "
                                  f"where its description says {self.num_classes} logits and {self.feature_dim} "
                                  f"features; the description is not this graph's. Write both again with "
                                  f"`vitkit export` or `vitkit optimize`.")
        return out[:, out.shape[1] - self.feature_dim:]

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.fn(x).to(self.device_marker.device)

    def extra_repr(self) -> str:
        return self.description


def description_path(graph: str | os.PathLike) -> Path:
    """The JSON description beside a graph file, named after the whole file name (``m.xml`` ->
    ``m.xml.vitkit.json``), so that an ``.xml`` and an ``.onnx`` of one stem each keep their own."""
    graph = Path(graph)
    return graph.with_name(graph.name + DESCRIPTION_SUFFIX)


#: the backend a description records for each graph suffix
SUFFIX_BACKENDS = {".xml": "openvino", ".onnx": "onnxruntime"}


def _found_description(graph: Path) -> Path:
    """The description of ``graph``; one written by earlier releases (``m.vitkit.json``, shared by every graph of
    the stem) only when it records this graph's backend."""
    where = description_path(graph)
    older = graph.with_name(graph.stem + DESCRIPTION_SUFFIX)
    if where.is_file() or not older.is_file():
        return where
    try:
        backend = json.loads(older.read_text(encoding="utf-8")).get("backend")
    except (OSError, ValueError, AttributeError):
        return older  # read_description names what is wrong with it
    return older if backend == SUFFIX_BACKENDS.get(graph.suffix.lower()) else where


def describe(model: torch.nn.Module, *, backend: str, precision: str, **extra: Any) -> dict[str, Any]:
    """The JSON-ready description of ``model`` that lets its graph predict as it does."""
    cfg, config = pretrained_cfg_of_model(model), getattr(model, "config", None)
    return {"format": DESCRIPTION_FORMAT, "version": DESCRIPTION_VERSION, "backend": backend,
            "precision": precision, "model_name": name_of(model),
            "num_classes": int(getattr(model, "num_classes", 0) or 0),
            "pretrained_cfg": cfg.to_dict() if isinstance(cfg, PretrainedCfg) else None,
            "config": config.to_dict() if isinstance(config, ViTConfig) else None, **extra}


def _bad(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"Cannot load the exported model {str(path)!r}: {why}. Write it again with "
                           f"`vitkit export MODEL --out {path.name}` or `vitkit optimize MODEL --out {path.name}`.")


def read_description(graph: Path) -> dict[str, Any]:
    """The checked description of ``graph`` (a CheckpointError names what is missing or wrong)."""
    where = _found_description(graph)
    if not where.is_file():
        raise _bad(graph, f"its description {where.name} (preprocessing, classes) is missing beside it")
    try:
        data = read_json_file(where)
    except CheckpointError as exc:
        raise _bad(graph, f"its description {where.name} cannot be read ({str(exc).split('. ')[0]})") from None
    if data.get("format") != DESCRIPTION_FORMAT or data.get("version") != DESCRIPTION_VERSION:
        raise _bad(graph, f"{where.name} is not a vitkit graph description (format {data.get('format')!r}, "
                          f"version {data.get('version')!r})")
    try:
        data["pretrained_cfg"] = PretrainedCfg.from_dict(data["pretrained_cfg"])
        data["config"] = ViTConfig.from_dict(data["config"]) if data.get("config") is not None else None
        if not isinstance(data["num_classes"], int) or data["num_classes"] < 0:
            raise ValueError(f"num_classes={data['num_classes']!r}")
        dim = data.get("feature_dim")
        if dim is not None and (not isinstance(dim, int) or dim < 1):
            raise ValueError(f"feature_dim={data['feature_dim']!r}")
        if data.get("precision") not in OV_HINTS:
            raise ValueError(f"precision={data.get('precision')!r}")
        if data.get("backend") != SUFFIX_BACKENDS.get(graph.suffix.lower()):
            raise ValueError(f"backend={data.get('backend')!r} for a {graph.suffix} graph")
    except (KeyError, TypeError, ValueError, VitkitError) as exc:
        what = f"no {exc.args[0]!r} entry" if isinstance(exc, KeyError) else _last_line(exc)
        raise _bad(graph, f"{where.name} is damaged ({what})") from None
    return data


def _last_line(exc: BaseException) -> str:
    """The message of a runtime's exception without its source locations: its last non-empty line, shortened."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:200].rstrip(".")


def _openvino_fn(path: Path, precision: str, threads: int, mode: str) -> Callable[[torch.Tensor], torch.Tensor]:
    try:
        import openvino as ov
    except ImportError as exc:
        raise MissingDependencyError(f"{path.name} is an OpenVINO model: pip install openvino") from exc
    weights = path.with_suffix(".bin")
    if not weights.is_file():
        raise _bad(path, f"its weights {weights.name} are missing beside it")
    core = ov.Core()
    try:
        ov_model = core.read_model(str(path), str(weights))
        config: dict[str, Any] = {"PERFORMANCE_HINT": mode.upper(), "INFERENCE_NUM_THREADS": threads}
        if OV_HINTS[precision]:
            config["INFERENCE_PRECISION_HINT"] = OV_HINTS[precision]
        compiled = core.compile_model(ov_model, "CPU", config)
    except RuntimeError as exc:  # OpenVINO's parse and weight-size errors
        raise _bad(path, f"OpenVINO cannot read it or its {weights.name} ({_last_line(exc)})") from None
    return compiled_runner(compiled, streams=mode == "throughput")


def compiled_runner(compiled: Any, *, streams: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """(B, C, H, W) float images -> the compiled model's first output. ``streams``: the batch is split over the
    compiled model's streams (throughput mode), one request each, run at once; else one request runs it whole."""
    if not streams:
        request = compiled.create_infer_request()

        def run(x: torch.Tensor) -> torch.Tensor:
            out = request.infer({0: x.detach().float().cpu().numpy()})
            return torch.from_numpy(np.array(next(iter(out.values()))))

        return run
    import openvino as ov

    count = max(1, int(compiled.get_property("NUM_STREAMS")))
    queue = ov.AsyncInferQueue(compiled, count)
    parts: dict[int, np.ndarray] = {}
    queue.set_callback(lambda request, i: parts.__setitem__(i, np.array(request.get_output_tensor(0).data)))

    def run_streams(x: torch.Tensor) -> torch.Tensor:
        chunks = np.array_split(x.detach().float().cpu().numpy(), min(count, len(x)))
        parts.clear()
        for i, chunk in enumerate(chunks):
            queue.start_async({0: chunk}, userdata=i)
        queue.wait_all()
        return torch.from_numpy(np.concatenate([parts[i] for i in range(len(chunks))]))

    return run_streams


def _onnx_fn(path: Path, threads: int) -> Callable[[torch.Tensor], torch.Tensor]:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise MissingDependencyError(f"{path.name} is an ONNX model: pip install onnxruntime") from exc
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own (pybind) exception types for a damaged graph
        raise _bad(path, f"ONNX Runtime cannot read it ({_last_line(exc)})") from None
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.detach().float().cpu().numpy()})[0])


def is_graph_file(spec: str | os.PathLike) -> bool:
    return Path(os.fspath(spec)).suffix.lower() in GRAPH_SUFFIXES


def load_graph_model(path: str | os.PathLike, *, threads: int | None = None, mode: str = "latency") -> StandIn:
    """The exported graph at ``path`` (``.xml`` OpenVINO IR or ``.onnx``) with its description, on the CPU."""
    path = Path(os.fspath(path)).expanduser()
    if not path.is_file():
        raise _bad(path, "the file does not exist")
    data = read_description(path)
    threads = int(threads or torch.get_num_threads())
    if path.suffix.lower() == ".xml":
        fn = _openvino_fn(path, data["precision"], threads, mode)
    else:
        fn = _onnx_fn(path, threads)
    name = data.get("model_name") or path.stem
    return StandIn(fn, num_classes=data["num_classes"], pretrained_cfg=data["pretrained_cfg"], config=data["config"],
                   model_name=name if isinstance(name, str) else path.stem, feature_dim=data.get("feature_dim"),
                   description=f"{path.name}: {data.get('backend')} {data['precision']}")


def write_description(graph: Path, data: dict[str, Any]) -> Path:
    """``data`` as the description beside ``graph`` (atomically)."""
    return atomic_write(description_path(graph),
                        lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


__all__ = ["GRAPH_SUFFIXES", "StandIn", "describe", "description_path", "is_graph_file", "load_graph_model",
           "read_description", "write_description"]
