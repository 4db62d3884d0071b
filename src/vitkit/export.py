"""Export a model to ONNX (dynamic batch, height and width) or a torch.export ExportedProgram, and check it.

Both paths take any batch size and any input size that is a multiple of the patch size: the position
embeddings are resampled inside the exported graph. ``precision`` picks fp32, bf16 (bf16 weights and
activations) or int8 (integer matrix multiplies: ONNX Runtime's dynamic quantizer for ONNX).
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .choices import EXPORT_FORMATS, EXPORT_PRECISIONS, ONNX_OPSETS
from .errors import ConfigError, ExportError, MissingDependencyError, OutputError, keyword
from .fileio import atomic_write
from .model import name_of

log = logging.getLogger(__name__)

#: the suffix of an output file -> the format written there
FORMAT_SUFFIXES = {".onnx": "onnx", ".pt2": "torch-export"}
HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: what each format can hold (ONNX Runtime's CPU provider has no bf16 matrix multiply; torch.export
#: cannot serialise torch's dynamically quantized Linear)
FORMAT_PRECISIONS = {"onnx": ("fp32", "int8"), "torch-export": ("fp32", "bf16")}


@dataclass
class ExportResult:
    path: Path
    input_shape: tuple[int, ...]
    max_abs_diff: float | None  # largest over ``checks``; None if not verified
    format: str = "onnx"
    precision: str = "fp32"
    #: (height, width) -> max abs diff of the exported file against eager fp32 PyTorch at that size
    checks: dict[tuple[int, int], float] = field(default_factory=dict)


def check_precision(precision: str, allowed: tuple[str, ...] = EXPORT_PRECISIONS, what: str = "precision") -> str:
    """``precision`` if it is one of ``allowed``, else a ConfigError that lists them."""
    if precision not in allowed:
        raise ConfigError(f"{what}={precision!r} is not supported: use one of {', '.join(allowed)}.")
    return precision


def export_format(path: str | os.PathLike, format: str | None = None, *, opset: int = 18) -> str:  # noqa: A002
    """The format to write ``path`` in: ``format``, or the one its suffix names; a ConfigError for an unknown
    format, a suffix that names none, or an opset the exporter cannot write (checked before any work)."""
    suffix = Path(path).suffix.lower()
    if format is None and suffix not in FORMAT_SUFFIXES:
        known = ", ".join(f"{s} ({f})" for s, f in FORMAT_SUFFIXES.items())
        raise ConfigError(f"Cannot tell the export format from {str(path)!r}: its suffix {suffix or '(none)'!r} is "
                          f"not one of {known}. Name the file with one of them, or pass the format.")
    fmt = format or FORMAT_SUFFIXES[suffix]
    check_precision(fmt, EXPORT_FORMATS, "format")
    low, high = ONNX_OPSETS
    if fmt == "onnx" and not (isinstance(opset, int) and low <= opset <= high):
        raise ConfigError(f"opset={opset!r} is not supported: the ONNX exporter writes opsets {low} to {high} "
                          f"(default 18).")
    return fmt


def example_input(model: nn.Module, batch_size: int, size: tuple[int, int] | None = None) -> torch.Tensor:
    """A random batch for ``model`` on its device and in its dtype (a GPU or bf16 model gets a matching input)."""
    param = next(model.parameters())
    cfg = model.config
    return torch.randn(batch_size, cfg.in_chans, *(size or cfg.img_size), device=param.device, dtype=param.dtype)


# ---------------------------------------------------------------------------------------------- precision
class CastIO(nn.Module):
    """Runs ``module`` (bf16 weights and activations) on a float input cast to ``dtype``; returns float32."""

    def __init__(self, module: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.module, self.dtype = module, dtype
        self.config = getattr(module, "config", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.to(self.dtype)).float()


def convert_precision(model: nn.Module, precision: str) -> nn.Module:
    """An eval-mode copy of ``model`` in ``precision``; the caller's model is left as it is.

    fp32: a float32 copy. bf16: every weight and activation in bfloat16 (the matmul kernels accumulate in
    fp32), input cast in, output cast back to float32; fp16 alike (for CUDA). int8: torch's dynamic
    quantization of every ``nn.Linear`` (int8 weights per output channel, activations per batch; integer GEMMs).
    """
    check_precision(precision, (*EXPORT_PRECISIONS, "fp16"))
    dup = copy.deepcopy(model).eval()
    if precision == "fp32":
        return dup.float()
    if precision in HALF:
        return CastIO(dup.to(HALF[precision]), HALF[precision]).eval()
    if dup.pos_embed.device.type != "cpu":
        raise ConfigError(f"precision='int8' runs on the CPU only (torch's quantized Linear); the model is on "
                          f"{dup.pos_embed.device}. Move it to the CPU or use precision='bf16'.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice; the eager API still works
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        return quantize_dynamic(dup.float(), {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


# ---------------------------------------------------------------------------------------------- tracing
def _bicubic_aa_symbolic(g, x, output_size, *args):  # noqa: ANN001
    """ONNX for torch's antialiased bicubic resize (timm's position-embedding resampling): a Resize with
    PIL's cubic kernel (a = -0.5), out-of-image taps dropped and the weights renormalised, as torch does."""
    from torch.onnx import symbolic_helper as sh

    input_size = g.op("Shape", x)
    batch_chans = sh._slice_helper(g, input_size, axes=[0], starts=[0], ends=[2])
    sizes = g.op("Concat", batch_chans, g.op("Cast", output_size, to_i=7), axis_i=0)  # 7: INT64
    empty = sh._optional_input_placeholder_tensor(g)
    return g.op("Resize", x, empty, empty, sizes, mode_s="cubic", cubic_coeff_a_f=-0.5, exclude_outside_i=1,
                antialias_i=1, coordinate_transformation_mode_s="half_pixel")


def verify_sizes(model: nn.Module) -> list[tuple[int, int]]:
    """The native size, a smaller non-square and a larger size, as patch multiples (224: 160x224, 384x384)."""
    (h, w), (ph, pw) = model.config.img_size, model.config.patch_size
    return [(h, w), (max(2 * ph, round(h * 5 / 7 / ph) * ph), w),
            (round(h * 12 / 7 / ph) * ph, round(w * 12 / 7 / pw) * pw)]


def _verify(run: Callable[[torch.Tensor], torch.Tensor], model: nn.Module, batch_size: int) -> dict:
    """Max abs difference of ``run`` against eager fp32 ``model`` at each of ``verify_sizes``."""
    reference = convert_precision(model, "fp32").cpu()
    checks = {}
    for size in verify_sizes(model):
        x = example_input(reference, batch_size, size)
        try:
            got = run(x).float()
        except Exception as exc:  # noqa: BLE001 (a runtime's own exception types: the graph does not run here)
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            why = (lines[-1] if lines else type(exc).__name__)[:300]
            raise ExportError(f"The exported graph of {name_of(model)!r} does not run at input {tuple(x.shape)} "
                              f"({why}), so it does not take every input size the model takes; report the model "
                              f"and the size to vitkit (verify=False skips this check).") from None
        with torch.no_grad():
            checks[size] = float((got - reference(x)).abs().max())
        log.info("exported model vs eager fp32 at %s: max abs diff %.3g", tuple(x.shape), checks[size])
    return checks


def _write_onnx(path: Path, write_fp32: Callable[[Path], None], precision: str) -> None:
    """The ONNX file ``write_fp32`` writes, quantized by ONNX Runtime's dynamic quantizer for int8, atomically."""
    def write_int8(tmp: Path) -> None:
        with tempfile.TemporaryDirectory() as scratch:
            fp32 = Path(scratch) / "fp32.onnx"
            write_fp32(fp32)
            quantize_onnx(fp32, tmp)

    _write_guarded(path, write_int8 if precision == "int8" else write_fp32, "the ONNX file")


def _write_guarded(path: Path, write: Callable[[Path], object], what: str) -> None:
    """``atomic_write``, with the errors a user causes (an unwritable path, an op the exporter lacks) as
    VitkitError; anything else is a bug and propagates as it is."""
    try:
        atomic_write(path, write)
    except OSError as exc:
        raise OutputError(f"Cannot write {what} to {path}: {exc.strerror or exc}. Choose a writable file path.") \
            from exc
    except torch.onnx.errors.OnnxExporterError as exc:  # incl. UnsupportedOperatorError
        raise ExportError(f"ONNX export to {path} failed: {exc}. Try --format torch-export.") from exc


# ---------------------------------------------------------------------------------------------- ONNX
def export_onnx(model: torch.nn.Module, path: str | os.PathLike, *, batch_size: int = 1, opset: int = 18,
                precision: str = "fp32", verify: bool = True, max_patches: int | None = None) -> ExportResult:
    """Write ``model`` (eval mode) to an ONNX file with dynamic batch, height and width axes.

    With ``max_patches`` the graph takes padded patch sequences instead (images at their own aspect ratio):
    see ``export_onnx_native``.

    The input is named ``pixel_values``, the output ``logits`` (pooled features for a headless model).
    ``precision='int8'`` runs ONNX Runtime's dynamic quantizer (int8 weights per channel) on the graph.
    With ``verify`` the file runs in ONNX Runtime at ``verify_sizes`` on ``batch_size + 1`` images and the
    differences to eager fp32 PyTorch are returned. A failed export leaves nothing behind. The caller's
    model is not changed (the export works on a float32 copy on the model's device).
    """
    if max_patches is not None:
        return export_onnx_native(model, path, max_patches=max_patches, opset=opset, precision=precision,
                                  verify=verify)
    check_precision(precision, FORMAT_PRECISIONS["onnx"], "ONNX precision")
    path = Path(path)
    work = convert_precision(model, "fp32")
    x = example_input(work, batch_size)
    torch.onnx.register_custom_op_symbolic("aten::_upsample_bicubic2d_aa", _bicubic_aa_symbolic, opset)

    def write_fp32(tmp: Path) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer notes about Python-level shape checks
            # The TorchScript exporter traces shape arithmetic dynamically and needs no onnxscript (which the
            # export-based exporter requires and vitkit does not); the resize is registered above.
            torch.onnx.export(work, (x,), str(tmp), dynamo=False, opset_version=opset,
                              input_names=["pixel_values"], output_names=["logits"],
                              dynamic_axes={"pixel_values": {0: "batch", 2: "height", 3: "width"},
                                            "logits": {0: "batch"}})

    _write_onnx(path, write_fp32, precision)
    result = ExportResult(path=path, input_shape=tuple(x.shape), max_abs_diff=None, precision=precision)
    if verify:
        session = onnx_session(path)
        result.checks = _verify(lambda t: torch.from_numpy(session.run(None, {"pixel_values": t.numpy()})[0]),
                                model, batch_size + 1)
        result.max_abs_diff = max(result.checks.values())
    return result


def quantize_onnx(src: Path, dst: Path, *, per_channel: bool = True) -> None:
    """ONNX Runtime's dynamic int8 quantization of ``src`` into ``dst``: int8 weights (per output channel),
    uint8 activations quantized per batch at run time, integer MatMuls (MatMulInteger / DynamicQuantizeMatMul)."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise MissingDependencyError("int8 ONNX needs onnxruntime: pip install 'vitkit[onnx]'") from exc
    root = logging.getLogger()
    hint = lambda record: "pre-processing before quantization" not in record.getMessage()  # noqa: E731
    root.addFilter(hint)  # the quantizer logs this advice to the root logger on every call; the graph needs none
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel)
    finally:
        root.removeFilter(hint)


def onnx_session(path: str | os.PathLike | bytes, threads: int | None = None):
    """An ONNX Runtime CPU session for ``path`` with all graph optimisations (onnxruntime is optional)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise MissingDependencyError("onnxruntime is not installed: pip install 'vitkit[onnx]'") from exc
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------------------------- ONNX, patch sequences
#: (height, width) of the images a patch-sequence graph is traced on (5:3, 3:5), and the other ones it is verified
#: on (square, 4:3 portrait, 9:16 panorama): a graph that froze the example's grids would fail the check
NATIVE_TRACE_ASPECTS = ((300, 500), (500, 300))
NATIVE_VERIFY_ASPECTS = ((480, 480), (640, 480), (270, 480))
PATCH_INPUTS = ("patches", "mask", "grids")


class PatchGraph(nn.Module):
    """``forward(patches, mask, grids)``: ``model.forward_patches``, the module a graph of padded patch sequences
    is traced from (traced, the model computes each token's position terms from ``grids`` in the graph)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.config = model, model.config

    def forward(self, patches: torch.Tensor, mask: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
        return self.model.forward_patches(patches, mask, grids)


def native_budget(model: nn.Module, max_patches: int | None) -> int:
    """The patch budget a patch-sequence export is made and verified at: ``max_patches``, else the checkpoint's
    own (``pretrained_cfg.max_num_patches``), else the model's configured number of patches; checked."""
    from .patches import PatchProcessor

    return PatchProcessor.from_model(model, max_num_patches=_checked_budget(max_patches)).max_num_patches


def _checked_budget(max_patches: int | None) -> int | None:
    if max_patches is not None and (not isinstance(max_patches, int) or isinstance(max_patches, bool)
                                    or max_patches < 1):
        raise ConfigError(f"max_patches={max_patches!r} is not allowed: expected a positive number of patches per "
                          f"image (e.g. 256).")
    return max_patches


def example_patches(model: nn.Module, max_patches: int, *, aspects: tuple[tuple[int, int], ...] = NATIVE_TRACE_ASPECTS,
                    seed: int = 0) -> Any:
    """A ``PatchBatch`` of random pixels for ``model``: one image of each (height, width) of ``aspects`` at the
    budget, padded to it (as ``PatchProcessor`` pads by default), on the model's device."""
    from .patches import pad_sequences, size_for_patch_budget

    c = model.config
    p = c.patch_size[0]
    gen = torch.Generator().manual_seed(seed)
    sequences, grids = [], []
    for height, width in aspects:
        h, w = size_for_patch_budget(height, width, patch_size=p, max_num_patches=max_patches)
        grids.append((h // p, w // p))
        sequences.append(torch.randn(h // p * (w // p), p * p * c.in_chans, generator=gen))
    return pad_sequences(sequences, grids, length=max_patches).to(next(model.parameters()).device)


def patch_feeds(batch: Any) -> dict[str, Any]:
    """A ``PatchBatch`` as the inputs of a graph of patch sequences (numpy arrays by input name)."""
    return {"patches": batch.patches.float().cpu().numpy(), "mask": batch.mask.cpu().numpy(),
            "grids": batch.grids.cpu().numpy()}


def export_onnx_native(model: nn.Module, path: str | os.PathLike, *, max_patches: int | None = None,
                       opset: int = 18, precision: str = "fp32", verify: bool = True) -> ExportResult:
    """Write ``model`` (eval mode) as an ONNX graph of padded patch sequences: images at their own aspect ratio.

    Inputs, as ``vitkit.patches.PatchProcessor`` makes them (and as transformers' SigLIP 2 takes
    ``pixel_values``, ``pixel_attention_mask``, ``spatial_shapes``): ``patches`` (batch, num_patches,
    patch * patch * channels) float32, ``mask`` (batch, num_patches) bool, True on real patches, and ``grids``
    (batch, 2) int64, each image's rows and columns of patches; batch and num_patches are dynamic. Output
    ``logits`` (pooled features for a headless model). The position embeddings are resampled inside the graph
    from ``grids``: each token's embedding is a weighted sum of the learned grid, with the weights of the
    checkpoint's own resize (bilinear/bicubic, antialiased or not) computed from the grid sizes, so one graph
    serves every grid, batched. ``max_patches`` (default: the checkpoint's budget) sets the example and the
    verification inputs only. With ``verify`` the file runs in ONNX Runtime on images of three aspect ratios in
    one padded batch and each alone; ``checks`` maps each grid to the max abs difference to eager fp32
    ``forward_patches``. Models with rotary embeddings are refused (their tables are computed per grid in
    Python). The caller's model is not changed.
    """
    check_precision(precision, FORMAT_PRECISIONS["onnx"], "ONNX precision")
    budget = native_budget(model, max_patches)
    if model.config.rope != "none":
        raise ExportError(f"{type(model).__name__} uses rotary position embeddings ({model.config.rope!r}); an ONNX "
                          f"graph of patch sequences is not available for them yet. Export it for images (without "
                          f"max_patches): the graph takes any height and width.")
    path = Path(path)
    work = PatchGraph(convert_precision(model, "fp32")).eval()
    batch = example_patches(work.model, budget)

    def write_fp32(tmp: Path) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer notes about the Python-level checks of the example
            torch.onnx.export(work, (batch.patches, batch.mask, batch.grids), str(tmp), dynamo=False,
                              opset_version=opset, input_names=list(PATCH_INPUTS), output_names=["logits"],
                              dynamic_axes={"patches": {0: "batch", 1: "num_patches"},
                                            "mask": {0: "batch", 1: "num_patches"}, "grids": {0: "batch"},
                                            "logits": {0: "batch"}})

    _write_onnx(path, write_fp32, precision)
    result = ExportResult(path=path, input_shape=tuple(batch.patches.shape), max_abs_diff=None, precision=precision)
    if verify:
        session = onnx_session(path)
        result.checks = verify_patches(lambda b: torch.from_numpy(session.run(None, patch_feeds(b))[0]), model,
                                       budget)
        result.max_abs_diff = max(result.checks.values())
    return result


def verify_patches(run: Callable[[Any], torch.Tensor], model: nn.Module, max_patches: int) -> dict:
    """Max abs difference of ``run`` (a PatchBatch -> outputs) against eager fp32 ``forward_patches`` for each
    grid of ``example_patches``, the largest of it batched with the others (padded to the budget) and alone
    (padded to its own length)."""
    reference = convert_precision(model, "fp32").cpu()
    batch = example_patches(reference, max_patches, aspects=NATIVE_VERIFY_ASPECTS, seed=1)
    with torch.no_grad():
        want = reference.forward_patches(batch.patches, batch.mask, batch.grids)
        together = run(batch).float()
        checks = {}
        for i, grid in enumerate(batch.grids.tolist()):
            alone = run(batch.select(i).chunk(1)[0]).float()  # trimmed to its own length
            checks[tuple(grid)] = max(float((together[i] - want[i]).abs().max()),
                                      float((alone[0] - want[i]).abs().max()))
            log.info("exported patch graph vs eager fp32 at grid %s: max abs diff %.3g", tuple(grid),
                     checks[tuple(grid)])
    return checks


# ---------------------------------------------------------------------------------------------- torch.export
def export_program(model: nn.Module, *, precision: str = "fp32", batch_size: int = 2) -> torch.export.ExportedProgram:
    """A torch.export ExportedProgram of ``model`` with dynamic batch, height and width (multiples of the
    patch size, at least two patches). The caller's model is not changed."""
    check_precision(precision, FORMAT_PRECISIONS["torch-export"], "torch.export precision")
    work = convert_precision(model, precision)
    cfg = model.config
    x = example_input(model, batch_size).float()
    batch = torch.export.Dim("batch", min=1, max=4096)
    # height and width are patch multiples: the model checks it, and torch.export needs it stated; at
    # least 2 patches each way, as torch.export specialises a dimension of size 1
    rows = torch.export.Dim("rows", min=2, max=1024)
    cols = torch.export.Dim("cols", min=2, max=1024)
    shapes = ({0: batch, 2: cfg.patch_size[0] * rows, 3: cfg.patch_size[1] * cols},)
    with torch.no_grad():
        return torch.export.export(work, (x,), dynamic_shapes=shapes)


def export_torch(model: nn.Module, path: str | os.PathLike, *, precision: str = "fp32", verify: bool = True,
                 batch_size: int = 1) -> ExportResult:
    """Save ``export_program(model)`` to ``path`` (``torch.export.save``, a .pt2 archive) and check it."""
    path = Path(path)
    program = export_program(model, precision=precision, batch_size=batch_size + 1)
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: torch.export.save warns on a path not ending in .pt2
            torch.export.save(program, f)

    _write_guarded(path, write, "the ExportedProgram")
    x_shape = (batch_size, model.config.in_chans, *model.config.img_size)
    result = ExportResult(path=path, input_shape=x_shape, max_abs_diff=None, format="torch-export",
                          precision=precision)
    if verify:
        loaded = torch.export.load(str(path)).module()
        device = next(loaded.parameters()).device
        result.checks = _verify(lambda t: loaded(t.to(device)).cpu(), model, batch_size + 1)
        result.max_abs_diff = max(result.checks.values())
    return result


def export_model(model: nn.Module, path: str | os.PathLike, *, format: str | None = None,
                 precision: str = "fp32", opset: int = 18, verify: bool = True,
                 max_patches: int | None = None) -> ExportResult:
    """Export by ``format`` ('onnx' or 'torch-export'; None: from the suffix, .onnx or .pt2); ``max_patches``:
    an ONNX graph of patch sequences (``export_onnx_native``)."""
    fmt = export_format(path, format, opset=opset)
    check_precision(precision, FORMAT_PRECISIONS[fmt], f"{fmt} precision")
    if max_patches is not None and fmt != "onnx":
        budget, onnx, drop = keyword("max_patches", max_patches), keyword("format", "onnx"), keyword("max_patches")
        raise ConfigError(f"{budget} exports a graph of patch sequences, which is written as ONNX only; name the "
                          f"file .onnx (or pass {onnx}), or drop {drop}.", hints=(budget, onnx, drop))
    if fmt == "onnx":
        return export_onnx(model, path, precision=precision, opset=opset, verify=verify, max_patches=max_patches)
    return export_torch(model, path, precision=precision, verify=verify)
