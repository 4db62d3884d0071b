"""Export a model to ONNX and check it against PyTorch with ONNX Runtime."""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import ExportError, MissingDependencyError
from .fileio import atomic_write
from .runtime import eval_mode

log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    path: Path
    input_shape: tuple[int, ...]
    max_abs_diff: float | None  # ONNX Runtime vs PyTorch on a random batch; None if not verified


def export_onnx(model: torch.nn.Module, path: str | os.PathLike, *, batch_size: int = 1, opset: int = 18,
                verify: bool = True) -> ExportResult:
    """Write ``model`` (eval mode, fp32) to an ONNX file with a dynamic batch axis.

    The input is named ``pixel_values`` with the model's configured image size; the output ``logits``
    (or pooled features for a headless model). With ``verify`` the file is run with ONNX Runtime on a
    batch of ``batch_size + 1`` images (to exercise the dynamic axis) and the max difference returned.
    The file is written to a temporary name and renamed, so a failed export leaves nothing behind.
    """
    path = Path(path)
    cfg = model.config
    shape = (batch_size, cfg.in_chans, *cfg.img_size)

    def write(tmp: Path) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer notes about shape checks that are constant for one size
            # The TorchScript exporter: the export-based one needs onnxscript, which vitkit does not require.
            torch.onnx.export(model, (torch.randn(shape),), str(tmp), dynamo=False, opset_version=opset,
                              input_names=["pixel_values"], output_names=["logits"],
                              dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}})

    try:
        with eval_mode(model):
            atomic_write(path, write)
    except Exception as exc:
        name = getattr(model, "model_name", "the model")
        raise ExportError(f"ONNX export of {name} to {path} failed: {exc}") from exc
    diff = verify_onnx(model, path, batch_size=batch_size + 1) if verify else None
    return ExportResult(path=path, input_shape=shape, max_abs_diff=diff)


def onnx_session(path: str | os.PathLike, threads: int | None = None):
    """An ONNX Runtime CPU session for ``path`` (onnxruntime is an optional dependency)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise MissingDependencyError("onnxruntime is not installed: pip install 'vitkit[onnx]'") from exc
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def verify_onnx(model: torch.nn.Module, path: str | os.PathLike, *, batch_size: int = 2) -> float:
    """Max abs difference between ONNX Runtime and PyTorch outputs on a random batch."""
    cfg = model.config
    x = torch.randn(batch_size, cfg.in_chans, *cfg.img_size)
    with torch.no_grad(), eval_mode(model):
        want = model(x)
    got = onnx_session(path).run(None, {"pixel_values": x.numpy()})[0]
    diff = float((torch.from_numpy(got) - want).abs().max())
    log.info("ONNX Runtime vs PyTorch on %s: max abs diff %.3g", tuple(x.shape), diff)
    return diff
