"""OpenVINO as an inference backend: fp32 and bf16 through the CPU plugin's precision hint, int8 through NNCF's
post-training quantization (static: weights and activations, calibrated on real images).

The model goes to OpenVINO through vitkit's ONNX export (dynamic batch, height and width, the position
embedding resize recorded in the graph), so an OpenVINO model takes any input size the eager model takes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from .errors import ConfigError, MissingDependencyError
from .export import export_onnx
from .graphmodel import compiled_runner
from .processor import ImageProcessor, sample_photos

#: vitkit precision -> the CPU plugin's inference precision hint
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": None}  # int8: the quantized graph decides
PERFORMANCE_MODES = ("latency", "throughput")
#: how an int8 graph's non-quantized ops run: the plugin's choice (bf16 where the CPU has it natively) or f32
ACTIVATIONS = ("default", "f32")
DEFAULT_CALIBRATION = 16  # images, when none are given


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def _openvino() -> Any:
    if not openvino_available():
        raise MissingDependencyError("backend='openvino' needs the openvino package: pip install openvino nncf "
                                     "(or pip install 'vitkit[openvino]').")
    import openvino

    return openvino


def default_calibration_images(count: int = DEFAULT_CALIBRATION) -> list[Image.Image]:
    """``count`` crops and flips of the real photos that ship with scikit-learn, for calibrating int8 when no
    images of the user's own are given (real photos, not noise: activation ranges from noise are wrong)."""
    photos = sample_photos()[:2]
    out = []
    for i in range(count):
        img = photos[i % 2]
        w, h = img.size
        frac = 0.5 + 0.5 * ((i // 2) % 4) / 3  # 50% .. 100% of the photo
        cw, ch = int(w * frac), int(h * frac)
        left, top = (w - cw) * ((i * 7) % 5) // 4, (h - ch) * ((i * 3) % 5) // 4
        crop = img.crop((left, top, left + cw, top + ch))
        out.append(crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if i % 3 == 2 else crop)
    return out


def calibration_batches(model: nn.Module, images: Sequence[Any] | None = None, *, batch_size: int = 8
                        ) -> list[np.ndarray]:
    """Calibration inputs (B, C, H, W) float32 through the model's own preprocessing; ``images`` (paths or PIL
    images) default to ``default_calibration_images()``."""
    images = list(images) if images is not None else default_calibration_images()
    if not images:
        raise ConfigError("No calibration images: give at least one image (e.g. --calibrate DIR with photos).")
    processor = ImageProcessor.from_model(model)
    pixels = processor(images).numpy()
    return [pixels[i:i + batch_size] for i in range(0, len(pixels), batch_size)]


@contextlib.contextmanager
def _quiet_nncf() -> Iterator[None]:
    """NNCF's own logger (it writes to the stdout it saw at import) at ERROR while quantizing, then as it was.
    Only the logger's level changes: ``nncf.set_log_level`` would also re-level every handler attached to it,
    which may belong to the caller."""
    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    nncf_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        nncf_logger.setLevel(level)


def to_openvino(model: nn.Module, *, precision: str = "fp32", calibration: Sequence[np.ndarray] | None = None
                ) -> Any:
    """An ``openvino.Model`` of ``model`` (via the ONNX export); int8: quantized by NNCF (transformer preset)
    on ``calibration`` batches (default: ``calibration_batches(model)``)."""
    if precision not in PRECISION_HINTS:
        raise ConfigError(f"precision={precision!r} is not supported by the OpenVINO backend: use one of "
                          f"{', '.join(PRECISION_HINTS)}.")
    ov = _openvino()
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "model.onnx", verify=False).path
        ov_model = ov.Core().read_model(str(path))
        if precision != "int8":
            return ov_model
        import nncf  # installed with openvino's extra

        batches = list(calibration) if calibration is not None else calibration_batches(model)
        with _quiet_nncf(), contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars: stdout is for results
            return nncf.quantize(ov_model, nncf.Dataset(batches), model_type=nncf.ModelType.TRANSFORMER,
                                 subset_size=len(batches))  # batches, as the dataset counts them


def compile_openvino(ov_model: Any, *, precision: str = "fp32", threads: int | None = None,
                     mode: str = "latency", activations: str = "default") -> Any:
    """The model compiled for the CPU plugin with ``precision``'s hint, ``threads`` (default: torch's) and a
    performance ``mode``: 'latency' (one stream) or 'throughput' (streams for batch jobs). ``activations``
    (int8): 'default' lets the plugin run the ops between the integer GEMMs in bf16 where the CPU has it, 'f32'
    keeps them in f32."""
    if mode not in PERFORMANCE_MODES:
        raise ConfigError(f"mode={mode!r} is not supported: use 'latency' or 'throughput'.")
    if activations not in ACTIVATIONS:
        raise ConfigError(f"activations={activations!r} is not supported: use 'default' or 'f32'.")
    ov = _openvino()
    config: dict[str, Any] = {"PERFORMANCE_HINT": mode.upper(),
                              "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads())}
    if precision != "default" and PRECISION_HINTS.get(precision):  # 'default': the plugin's own choice
        config["INFERENCE_PRECISION_HINT"] = PRECISION_HINTS[precision]
    if precision == "int8" and activations == "f32":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    return ov.Core().compile_model(ov_model, "CPU", config)


def openvino_runner(model: nn.Module, precision: str, *, calibration: Sequence[np.ndarray] | None = None,
                    mode: str = "latency", activations: str = "default", ov_model: Any = None
                    ) -> Callable[[torch.Tensor], torch.Tensor]:
    """(B, C, H, W) float images -> the model's output, computed by OpenVINO in ``precision`` (``ov_model``: the
    model already converted by ``to_openvino`` in that precision, e.g. shared by several compiles)."""
    if ov_model is None:
        ov_model = to_openvino(model, precision=precision, calibration=calibration)
    compiled = compile_openvino(ov_model, precision=precision, mode=mode, activations=activations)
    return compiled_runner(compiled, streams=mode == "throughput")


def save_openvino(ov_model: Any, path: str | Path) -> Path:
    """Write the IR (``path`` .xml and its .bin beside it)."""
    path = Path(path)
    if path.suffix.lower() != ".xml":
        raise ConfigError(f"An OpenVINO model is written as an .xml file (with its .bin beside it), got "
                          f"{str(path)!r}.")
    _openvino().save_model(ov_model, str(path), compress_to_fp16=False)  # keep fp32 weights as they are
    return path


__all__ = ["ACTIVATIONS", "PERFORMANCE_MODES", "calibration_batches", "compile_openvino", "default_calibration_images",
           "openvino_available", "openvino_runner", "save_openvino", "to_openvino"]
