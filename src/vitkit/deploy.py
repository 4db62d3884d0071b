"""Models written to run without vitkit's torch model: an OpenVINO IR (fp32, bf16 hint, NNCF int8) and calibrated
static int8 graphs (``optimize_model``: OpenVINO through NNCF, or ONNX Runtime's static QDQ quantizer), each with
the description beside it (``graphmodel``) so that ``vitkit.predict(images, model=PATH)`` runs it as the model.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .choices import OPTIMIZE_BACKENDS
from .data.images import list_images
from .errors import ConfigError, DataError, MissingDependencyError, OutputError
from .export import (
    ExportResult,
    _verify,
    _write_guarded,
    check_precision,
    convert_precision,
    example_input,
    export_format,
    export_onnx,
)
from .export import export_model as _export_model
from .fileio import atomic_write
from .graphmodel import describe, description_path, load_graph_model, write_description
from .openvino_runtime import calibration_batches, default_calibration_images, save_openvino, to_openvino
from .processor import ImageProcessor, sample_photos

log = logging.getLogger(__name__)

OPENVINO_PRECISIONS = ("fp32", "bf16", "int8")
BUNDLED_CALIBRATION = ("no calibration images given: int8 is calibrated on 16 crops and flips of the bundled sample "
                       "photos (scikit-learn's china.jpg and flower.jpg) and checked on the full photos; give "
                       "--calibrate DIR with images like yours for an int8 model fitted to them")
HOLD_OUT_EVERY = 5  # one calibration image in five is held out for the report


@dataclass
class GraphExportResult(ExportResult):
    #: int8: mean cosine similarity to eager fp32 on real photos
    cosine: float | None = None
    description: Path | None = None


class WithFeatures(nn.Module):
    """The graph vitkit writes: ``model``'s logits and its pooled features (``forward_head(pre_logits=True)``)
    side by side in one output (B, num_classes + D); a headless model's output is its features alone."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.config = model, model.config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.model.forward_features(x)
        pooled = self.model.forward_head(tokens, pre_logits=True)
        if not int(getattr(self.model, "num_classes", 0) or 0):
            return pooled
        return torch.cat([self.model.forward_head(tokens), pooled], dim=-1)


def _graph_of(model: nn.Module) -> tuple[WithFeatures, dict[str, Any]]:
    """The module to write (an eval-mode fp32 copy on the CPU) and what the description records of its output."""
    graph = WithFeatures(convert_precision(model, "fp32").cpu()).eval()
    with torch.no_grad():
        pooled = graph.model.forward_head(graph.model.forward_features(example_input(graph.model, 1)),
                                          pre_logits=True)
    return graph, {"feature_dim": int(pooled.shape[-1])}


def _cosines(got: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(got.float().flatten(1), want.float().flatten(1), dim=1)


# ---------------------------------------------------------------------------------------------- OpenVINO IR
def _write_ir(ov_model: Any, path: Path, description: dict[str, Any]) -> None:
    """The description, then the IR; a failed IR write leaves no description behind."""
    write_description(path, description)
    try:
        _save_ir_atomically(ov_model, path)
    except BaseException:
        description_path(path).unlink(missing_ok=True)
        raise


def _save_ir_atomically(ov_model: Any, path: Path) -> None:
    """The IR to ``path`` (.xml) and its .bin: both written under temporary names beside it, then renamed, the
    .bin first (the .xml, which names no weight file, is the one a reader opens)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.stem}.", dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        try:
            save_openvino(ov_model, staged)
        except (OSError, RuntimeError) as exc:
            raise OutputError(f"Cannot write the OpenVINO model to {path}: {exc}. Choose a writable path.") from exc
        os.replace(staged.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(staged, path)


def _calibration_images(calibration: Any) -> list[Any] | None:
    if calibration is None:
        return None
    if isinstance(calibration, (str, os.PathLike)):
        return [str(p) for p in calibration_files(calibration)]
    return list(calibration)


def export_openvino(model: nn.Module, path: str | os.PathLike, *, precision: str = "fp32",
                    calibration: Any = None, verify: bool = True) -> GraphExportResult:
    """Write ``model`` as an OpenVINO IR (``path`` .xml, its .bin beside it) with its description
    (``<name>.vitkit.json``: preprocessing, classes, config), so the IR alone predicts as the model does.

    ``precision``: 'fp32'; 'bf16' (fp32 weights, the CPU plugin's bf16 inference hint recorded for loading);
    'int8' (NNCF's static quantization calibrated on ``calibration``: a folder of images, or images / paths;
    by default crops of the bundled sample photos). With ``verify`` the written files are loaded and run: fp32 and
    bf16 give the max abs difference to eager fp32 at ``export.verify_sizes``; int8 the mean cosine similarity on
    real photos. The caller's model is not changed.
    """
    path = Path(path)
    if path.suffix.lower() != ".xml":
        raise ConfigError(f"An OpenVINO model is written as an .xml file (its .bin beside it), got {str(path)!r}; "
                          f"name it e.g. model.xml.")
    check_precision(precision, OPENVINO_PRECISIONS, "OpenVINO precision")
    images = _calibration_images(calibration) if precision == "int8" else None
    graph, outputs = _graph_of(model)
    batches = calibration_batches(model, images) if precision == "int8" else None
    ov_model = to_openvino(graph, precision="fp32" if precision == "bf16" else precision, calibration=batches)
    _write_ir(ov_model, path, describe(model, backend="openvino", precision=precision, **outputs))
    result = GraphExportResult(path=path, input_shape=tuple(example_input(graph, 1).shape), max_abs_diff=None,
                               format="openvino", precision=precision, description=description_path(path))
    if verify:  # the written files, logits and features, against eager fp32
        run = load_graph_model(path).fn
        if precision == "int8":
            result.cosine = photo_cosine(run, graph)
        else:
            result.checks = _verify(run, graph, 2)
            result.max_abs_diff = max(result.checks.values())
    return result


def photo_cosine(run: Any, reference: nn.Module, images: Sequence[Any] | None = None) -> float:
    """Mean cosine similarity of ``run``'s outputs to eager ``reference``'s on ``images`` (default: the bundled
    sample photos and their flips) through the model's preprocessing."""
    pixels = ImageProcessor.from_model(getattr(reference, "model", reference))(
        list(images) if images is not None else _photo_views())
    with torch.no_grad():
        return float(_cosines(run(pixels), reference(pixels)).mean())


def _photo_views() -> list[Any]:
    from PIL import Image

    photos = sample_photos()
    return [*photos, *(p.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for p in photos)]


def export_model(model: nn.Module, path: str | os.PathLike, *, format: str | None = None,  # noqa: A002
                 precision: str = "fp32", opset: int = 18, verify: bool = True, max_patches: int | None = None,
                 calibration: Any = None) -> ExportResult:
    """Export by ``format``: 'onnx', 'torch-export' or 'openvino' (None: from the suffix, .onnx, .pt2 or .xml).
    OpenVINO: see ``export_openvino`` (``calibration`` for int8); the others: ``export.export_model``, an ONNX
    graph of images with its description beside it (``graphmodel``), so that ``vitkit.predict`` runs the file."""
    if graph_export_format(path, format, opset=opset) == "openvino":
        if max_patches is not None:
            raise ConfigError(f"max_patches={max_patches!r} exports a graph of patch sequences, which is written as "
                              f"ONNX only; name the file .onnx, or drop max_patches.")
        return export_openvino(model, path, precision=precision, calibration=calibration, verify=verify)
    if calibration is not None:
        raise ConfigError("calibration= is for OpenVINO int8 (format='openvino'); ONNX int8 is quantized "
                          "dynamically. For calibrated int8 ONNX use vitkit.deploy.optimize_model(..., "
                          "backend='onnxruntime').")
    result = _export_model(model, path, format=format, precision=precision, opset=opset, verify=verify,
                           max_patches=max_patches)
    if result.format == "onnx" and max_patches is None:  # an image graph: predict takes it (its output only)
        write_description(result.path, describe(model, backend="onnxruntime", precision=precision))
    return result


def graph_export_format(path: str | os.PathLike, format: str | None = None, *, opset: int = 18) -> str:  # noqa: A002
    """``export.export_format`` knowing OpenVINO's .xml too (checked before any work)."""
    if format == "openvino" or (format is None and Path(path).suffix.lower() == ".xml"):
        return "openvino"
    return export_format(path, format, opset=opset)


# ---------------------------------------------------------------------------------------------- calibrated int8
def calibration_files(folder: str | os.PathLike) -> list[Path]:
    """The images of a calibration folder (recursively); a DataError for a missing folder or one with none."""
    where = Path(os.fspath(folder)).expanduser()
    if not where.is_dir():
        raise DataError(f"Calibration folder {str(folder)!r} does not exist (or is not a folder): give a folder of "
                        f"images like those the model will see.")
    files = list_images(where, allow_empty=True)
    if len(files) < 2:
        raise DataError(f"Calibration folder {str(folder)!r} has {len(files)} image file(s): it needs at least 2 "
                        f"(one in {HOLD_OUT_EVERY} is held out to check the result), ideally 50 or more.")
    return files


def split_calibration(files: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """(calibrate on, held out): every ``HOLD_OUT_EVERY``-th image held out (at least one)."""
    held = [f for i, f in enumerate(files) if i % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1] or [files[-1]]
    return [f for f in files if f not in held], held


@dataclass
class OptimizeResult:
    path: Path
    backend: str
    precision: str
    report: dict[str, Any]
    report_path: Path
    calibration: str  # what the model was calibrated on, in words
    files: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        r = self.report
        agree = "n/a (no classifier head)" if r["top1_agreement"] is None else f"{r['top1_agreement']:.1%}"
        return (f"wrote {self.path} ({self.backend}, {self.precision}); against fp32 on {r['held_out']} held-out "
                f"image(s): top-1 agreement {agree}, mean cosine {r['mean_cosine']:.4f} (min {r['min_cosine']:.4f}); "
                f"report {self.report_path}")


def report_path(out: str | os.PathLike) -> Path:
    """The report beside an optimized graph, after its whole name (``m.xml`` -> ``m.xml.report.json``)."""
    out = Path(out)
    return out.with_name(out.name + ".report.json")


def check_optimize_out(out: str | os.PathLike, backend: str, precision: str) -> Path:
    """``out`` checked for ``backend`` (.xml for OpenVINO, .onnx for ONNX Runtime) and ``precision``."""
    check_precision(backend, OPTIMIZE_BACKENDS, "backend")
    allowed = OPENVINO_PRECISIONS if backend == "openvino" else ("fp32", "int8")
    check_precision(precision, allowed, f"{backend} precision")
    suffix = ".xml" if backend == "openvino" else ".onnx"
    out = Path(os.fspath(out))
    if out.suffix.lower() != suffix:
        raise ConfigError(f"--out {str(out)!r}: the {backend} backend writes a {suffix} file; name it e.g. "
                          f"model{suffix}.")
    return out


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over preprocessed batches."""

    def __init__(self, batches: list[np.ndarray]) -> None:
        self.batches, self.i = batches, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return {"pixel_values": self.batches[self.i - 1]}

    def rewind(self) -> None:
        self.i = 0


def quantize_onnx_static(src: Path, dst: Path, batches: list[np.ndarray]) -> None:
    """ONNX Runtime's static QDQ quantization of ``src`` into ``dst``: int8 weights per channel and int8
    activations with ranges calibrated on ``batches`` (MinMax), QuantizeLinear/DequantizeLinear pairs around the
    MatMuls and Gemms (the transformer's GEMMs; softmax, norms and GELU stay in float)."""
    try:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    except ImportError as exc:
        raise MissingDependencyError("static int8 ONNX needs onnxruntime: pip install 'vitkit[onnx]'") from exc
    reader = type("Reader", (_Reader, CalibrationDataReader), {})(batches)
    root = logging.getLogger()
    hint = lambda record: "pre-processing before quantization" not in record.getMessage()  # noqa: E731
    root.addFilter(hint)
    try:
        quantize_static(str(src), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["MatMul", "Gemm"],
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    finally:
        root.removeFilter(hint)


def _export_onnx_static(model: nn.Module, out: Path, precision: str, batches: list[np.ndarray] | None) -> None:
    graph, outputs = _graph_of(model)
    with tempfile.TemporaryDirectory() as scratch:
        fp32 = export_onnx(graph, Path(scratch) / "fp32.onnx", verify=False).path
        if precision == "fp32":
            _write_guarded(out, lambda tmp: tmp.write_bytes(fp32.read_bytes()), "the ONNX file")
        else:
            _write_guarded(out, lambda tmp: quantize_onnx_static(fp32, tmp, batches), "the ONNX file")
    write_description(out, describe(model, backend="onnxruntime", precision=precision, **outputs))


def optimize_model(model: nn.Module, out: str | os.PathLike, *, precision: str = "int8",
                   calibrate: str | os.PathLike | None = None, backend: str = "openvino") -> OptimizeResult:
    """Write a runnable optimized ``model`` to ``out`` and a report against eager fp32 beside it.

    ``backend='openvino'``: an OpenVINO IR (.xml); int8 through NNCF's static quantization. ``'onnxruntime'``: an
    ONNX file (.onnx); int8 through ONNX Runtime's static QDQ quantizer. int8 is calibrated on the images of the
    folder ``calibrate``, one in ``HOLD_OUT_EVERY`` held out for the report (top-1 agreement with fp32, mean and
    least cosine similarity of the outputs); without ``calibrate``, on crops of the bundled sample photos
    (``BUNDLED_CALIBRATION``). The report is ``<name>.report.json`` (``m.xml.report.json``);
    ``vitkit.predict(images, model=out)`` runs the result. The caller's model is not changed.
    """
    out = check_optimize_out(out, backend, precision)
    if calibrate is not None:
        calibrate_on, held_out = split_calibration([str(p) for p in calibration_files(calibrate)])
        source = f"{len(calibrate_on)} image(s) of {calibrate}, {len(held_out)} held out"
    else:
        calibrate_on, held_out, source = default_calibration_images(), _photo_views(), BUNDLED_CALIBRATION
    work = convert_precision(model, "fp32").cpu()
    batches = calibration_batches(work, calibrate_on) if precision == "int8" else None
    if backend == "openvino":
        graph, outputs = _graph_of(work)
        ov_model = to_openvino(graph, precision="fp32" if precision == "bf16" else precision, calibration=batches)
        _write_ir(ov_model, out, describe(model, backend="openvino", precision=precision, **outputs))
        files = [out, out.with_suffix(".bin"), description_path(out)]
    else:
        _export_onnx_static(work, out, precision, batches)
        files = [out, description_path(out)]
    report = compare_to_fp32(load_graph_model(out), work, held_out)
    report.update(backend=backend, precision=precision, calibration=source, model=str(out.name))
    where = report_path(out)
    atomic_write(where, lambda tmp: tmp.write_text(json.dumps(report, indent=2) + "\n"))
    return OptimizeResult(path=out, backend=backend, precision=precision, report=report, report_path=where,
                          calibration=source, files=[*files, where])


def compare_to_fp32(run: Any, reference: nn.Module, images: Sequence[Any]) -> dict[str, Any]:
    """Top-1 agreement (None for a headless model) and cosine similarity of ``run`` to eager fp32 on ``images``."""
    pixels = ImageProcessor.from_model(reference)(list(images))
    with torch.no_grad():
        got, want = run(pixels).float(), reference(pixels).float()
    cos = _cosines(got, want)
    top1 = float((got.argmax(-1) == want.argmax(-1)).float().mean()) if int(reference.num_classes or 0) else None
    return {"held_out": len(images), "top1_agreement": top1, "mean_cosine": float(cos.mean()),
            "min_cosine": float(cos.min())}


__all__ = ["BUNDLED_CALIBRATION", "GraphExportResult", "OptimizeResult", "calibration_files", "compare_to_fp32",
           "export_model", "export_openvino", "graph_export_format", "optimize_model"]
