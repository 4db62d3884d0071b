"""Top-k classification of image files with any classifier in the registry or on disk.

Folders are searched for images; a file that cannot be read is skipped and reported in its result
(``error``), so one bad image never costs the answers for the others.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .batching import batches, chunks
from .data.images import expand_inputs
from .errors import ConfigError, DataError, ImageError
from .fileio import atomic_write
from .inference import optimize_for_inference
from .labels import class_scores, is_multi_label, labels_for_model
from .model import name_of
from .patches import PatchProcessor, processor_for
from .processor import ImageInput, ImageProcessor
from .registry import is_registered
from .runtime import ModelSpec, borrowed, model_device, resolve_model

logger = logging.getLogger(__name__)

OUTPUT_FORMATS = (".csv", ".json")


@dataclass
class Prediction:
    """One class of a top-k answer."""

    index: int
    label: str
    probability: float


@dataclass
class ImagePredictions:
    """The top-k classes of one image, most probable first; ``error`` (no classes) when it could not be read.
    For a multi-label model also every class whose sigmoid score is above the threshold (``labels``, highest
    first; None for a softmax model)."""

    source: str
    top_k: list[Prediction] = field(default_factory=list)
    error: str | None = None
    labels: list[Prediction] | None = None
    threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"image": self.source, "predictions": [asdict(p) for p in self.top_k]}
        if self.labels is not None:
            out.update(labels=[asdict(p) for p in self.labels], threshold=self.threshold)
        if self.error is not None:
            out["error"] = self.error
        return out


def _describe(image: ImageInput, i: int) -> str:
    return str(image) if isinstance(image, (str, os.PathLike)) else f"<image {i}>"


def _expand(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    """A flat list of images: folders replaced by the image files in them (sorted, recursively)."""
    # a path that does not exist is a typo to report now, not an image to skip later
    out: list[ImageInput] = expand_inputs(images if isinstance(images, Sequence) else [images])
    if not out:
        raise DataError("No images given to predict; pass image files or folders of images.")
    return out


def _warn_if_random(model: ModelSpec, weights: Any) -> None:
    """A registry name without weights is a randomly initialised network: its answers mean nothing."""
    if isinstance(model, str) and weights is None and is_registered(model):
        logger.warning("model %r has RANDOM weights (a registry name without weights): its predictions are "
                       "meaningless. Give it weights (a checkpoint file, or 'pretrained' for the published ones), "
                       "or a saved model folder as the model.", model)


@torch.inference_mode()
def predict(
    images: ImageInput | Sequence[ImageInput],
    model: ModelSpec,
    *,
    weights: Any = None,
    top_k: int = 5,
    threshold: float = 0.5,
    labels: str | os.PathLike | list[str] | None = None,
    processor: ImageProcessor | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    backend: str = "eager",
    max_patches: int | None = None,
) -> list[ImagePredictions]:
    """The ``top_k`` most probable classes of each image (softmax over the model's logits).

    ``images``: files, folders (searched recursively), PIL images or uint8 arrays; a tensor too: uint8
    (B, C, H, W) or (C, H, W) 0-255 pixels are preprocessed as images, a float one is the model's input as it
    is (preprocessed already). An image that cannot be
    read gets a result with ``error`` set and no classes. ``model``: a registry name (with optional
    ``weights`` source), a saved model folder or checkpoint, or a model object (run where it is unless
    ``device`` is given, and handed back in the mode and on the device it had). ``labels``: class names
    (a built-in set, a file or a list); by default the model's. A multi-label model
    (``pretrained_cfg.multi_label``) scores each class with a sigmoid instead of a softmax, and each result
    also lists every class scoring above ``threshold``. ``precision``/``backend``: the inference path (see
    ``optimize_for_inference``; 'auto' picks the fastest). ``max_patches``: run each image at its own aspect
    ratio, resized to at most this many patches (position embeddings resampled per image); a native-aspect
    checkpoint (SigLIP 2 NaFlex) runs that way by default with its own budget.
    """
    if top_k < 1:
        raise ConfigError(f"top_k={top_k} is not allowed: expected a positive number of classes to show.")
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} is not allowed: expected a positive number of images.")
    tensor = isinstance(images, torch.Tensor)
    images = images if tensor else _expand(images)
    net = resolve_model(model, weights=weights, device=device)
    _warn_if_random(model, weights)
    if tensor:
        images = _tensor_images(images, int(net.config.in_chans))
    with borrowed(net, device):
        return _predict(images, net, top_k=top_k, threshold=threshold, labels=labels,
                        processor=processor or processor_for(net, max_patches=max_patches),
                        batch_size=batch_size, precision=precision, backend=backend)


def _predict(images: Sequence[ImageInput], net: torch.nn.Module, *, top_k: int, threshold: float,
             labels: str | os.PathLike | list[str] | None, processor: ImageProcessor | PatchProcessor,
             batch_size: int, precision: str, backend: str) -> list[ImagePredictions]:
    device = model_device(net)
    num_classes = int(getattr(net, "num_classes", 0))
    if num_classes < 1:
        raise ConfigError(f"Model {name_of(net)!r} has no classification head "
                          f"(num_classes=0), so there is nothing to predict. Use `vitkit features` for its "
                          f"embeddings, or load weights that include a classifier.")
    multi_label = is_multi_label(net)
    if multi_label and not 0.0 <= threshold < 1.0:
        raise ConfigError(f"threshold={threshold} is not allowed: expected a sigmoid score in [0, 1), e.g. 0.5.")
    names = labels_for_model(net, labels)
    k = min(top_k, num_classes)
    # the model as it is for the default path; else an optimized copy (the caller's model is not changed)
    # (patch sequences: ONNX Runtime runs the graph that takes them, other runners their image graph per grid)
    run = net if (precision, backend) == ("fp32", "eager") else optimize_for_inference(
        net, precision, backend, native=isinstance(processor, PatchProcessor))
    results: list[ImagePredictions | None] = [None] * len(images)
    groups = chunks(range(len(images)), batch_size)
    for batch in tqdm(batches(processor, images, groups), total=len(groups), desc="predict", unit="batch",
                      disable=len(groups) < 2):
        for i, exc in batch.errors.items():
            logger.info("skipped unreadable image: %s", exc)
            results[i] = ImagePredictions(source=_describe(images[i], i), error=str(exc))
        if batch.pixels is None:
            continue
        # eval mode: a distilled model returns the mean of its two heads' logits
        logits = run(batch.pixels.to(device)).float()  # from (B, C, H, W) or a PatchBatch
        probs = class_scores(logits, multi_label=multi_label)  # (B, num_classes)
        values, indices = probs.topk(k, dim=-1)  # (B, k)
        for row, (j, vals, idxs) in enumerate(zip(batch.rows, values.tolist(), indices.tolist())):
            top = [Prediction(index=i, label=names[i], probability=p) for p, i in zip(vals, idxs)]
            results[j] = ImagePredictions(source=_describe(images[j], j), top_k=top)
            if multi_label:
                results[j].labels, results[j].threshold = _above(probs[row], threshold, names), threshold
    return [r for r in results if r is not None]


def _above(scores: torch.Tensor, threshold: float, names: Sequence[str]) -> list[Prediction]:
    """The classes of one image's sigmoid scores (num_classes,) above ``threshold``, highest first."""
    picked = (scores > threshold).nonzero().flatten().tolist()
    return sorted((Prediction(index=i, label=names[i], probability=float(scores[i])) for i in picked),
                  key=lambda p: -p.probability)


def _tensor_images(images: torch.Tensor, in_chans: int) -> list[torch.Tensor]:
    """A tensor batch (B, C, H, W) or image (C, H, W) as a list of (C, H, W): float ones are model inputs
    (preprocessed), uint8 ones 0-255 images the processor resizes and normalises."""
    batch = images.unsqueeze(0) if images.ndim == 3 else images  # (C, H, W) -> (1, C, H, W)
    if batch.ndim != 4 or batch.shape[1] != in_chans or not (images.is_floating_point() or images.dtype == torch.uint8):
        raise ImageError(f"A tensor input must be (B, C, H, W) or (C, H, W) with C={in_chans}, float (preprocessed "
                         f"pixels) or uint8 (0-255), got {images.dtype} {tuple(images.shape)}.")
    return list(batch.detach().cpu())


def format_predictions(results: list[ImagePredictions]) -> str:
    """Human-readable text: each image, then its classes with probabilities (or why it was skipped)."""
    lines = []
    for r in results:
        lines.append(r.source)
        if r.error is not None:
            lines.append("  skipped: unreadable")
        if r.labels is not None:
            found = ", ".join(f"{p.label} ({p.probability:.2%})" for p in r.labels) or "none"
            lines.append(f"  labels above {r.threshold:g}: {found}")
        lines.extend(f"  {p.probability:7.2%}  {p.label} ({p.index})" for p in r.top_k)
    return printable("\n".join(lines))


#: the first characters that make a spreadsheet read a cell as a formula (OWASP "CSV Injection")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def printable(text: str) -> str:
    """``text`` with what UTF-8 cannot encode (a lone surrogate such as ``'\\ud800'``) as a backslash escape."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _cell(text: str) -> str:
    """A CSV text cell a spreadsheet shows as text: a formula-leading value gets a leading ``'``."""
    text = printable(text)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _csv_text(results: list[ImagePredictions]) -> str:
    """One row per (image, rank); an unreadable image is one row with its error."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image", "rank", "index", "label", "probability", "error"])
    for r in results:
        if r.error is not None:
            writer.writerow([_cell(r.source), "", "", "", "", _cell(r.error)])
        for rank, p in enumerate(r.top_k, start=1):
            writer.writerow([_cell(r.source), rank, p.index, _cell(p.label), f"{p.probability:.6g}", ""])
    return buf.getvalue()


def save_predictions(results: list[ImagePredictions], path: str | os.PathLike) -> Path:
    """Write every prediction to ``path`` atomically: .csv (one row per image and rank) or .json."""
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_FORMATS:
        raise ConfigError(f"Predictions output {str(path)!r} has an unknown format: expected a file ending "
                          f"in {' or '.join(OUTPUT_FORMATS)}.")
    if path.suffix.lower() == ".csv":
        text = _csv_text(results)
    else:
        text = json.dumps([r.to_dict() for r in results], indent=2) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
