"""Top-k classification of image files with any classifier in the registry or on disk."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from .errors import VitkitError
from .inference import optimize_for_inference
from .labels import labels_for_model
from .processor import ImageInput, ImageProcessor
from .registry import load_model

logger = logging.getLogger(__name__)

ModelSpec = str | os.PathLike | torch.nn.Module


@dataclass
class Prediction:
    """One class of a top-k answer."""

    index: int
    label: str
    probability: float


@dataclass
class ImagePredictions:
    """The top-k classes of one image, most probable first."""

    source: str
    top_k: list[Prediction] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.source, "predictions": [asdict(p) for p in self.top_k]}


def resolve_model(model: ModelSpec, *, weights: Any = None, device: str | torch.device | None = None,
                  **overrides: Any) -> torch.nn.Module:
    """A model object as given, or built from a registry name (with ``weights``) or a saved model path."""
    if isinstance(model, torch.nn.Module):
        if weights is not None:
            raise VitkitError("weights= is for a model name; load the weights into the model object yourself.")
        return model.to(device) if device is not None else model
    return load_model(str(model), weights=weights, device=device, **overrides)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _describe(image: ImageInput, i: int) -> str:
    return str(image) if isinstance(image, (str, os.PathLike)) else f"<image {i}>"


@torch.inference_mode()
def predict(
    images: ImageInput | Sequence[ImageInput],
    model: ModelSpec,
    *,
    weights: Any = None,
    top_k: int = 5,
    labels: str | os.PathLike | list[str] | None = None,
    processor: ImageProcessor | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    backend: str = "eager",
) -> list[ImagePredictions]:
    """The ``top_k`` most probable classes of each image (softmax over the model's logits).

    ``model``: a registry name (with optional ``weights`` source), a saved model folder or checkpoint,
    or a model object. ``labels``: class names (a built-in set, a file or a list); by default the model's.
    ``precision``/``backend``: the inference path (see ``optimize_for_inference``; 'auto' picks the fastest).
    """
    if isinstance(images, (str, os.PathLike)) or not isinstance(images, Sequence):
        images = [images]
    device = torch.device(device) if device is not None else default_device()
    net = resolve_model(model, weights=weights, device=device).eval()
    num_classes = int(getattr(net, "num_classes", 0))
    if num_classes < 1:
        raise VitkitError(f"Model {getattr(net, 'model_name', type(net).__name__)!r} has no classification head "
                          f"(num_classes=0), so there is nothing to predict. Use `vitkit features` for its "
                          f"embeddings, or load weights that include a classifier.")
    if top_k < 1:
        raise VitkitError(f"top_k={top_k} is not allowed: expected a positive number of classes to show.")
    names = labels_for_model(net, labels)
    processor = processor or ImageProcessor.from_model(net)
    k = min(top_k, num_classes)
    # the model as it is for the default path; else an optimized copy (the caller's model is not changed)
    run = net if (precision, backend) == ("fp32", "eager") else optimize_for_inference(net, precision, backend)
    results: list[ImagePredictions] = []
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc="predict", unit="batch", disable=len(starts) < 2):
        batch = images[start:start + batch_size]
        x = processor(batch).to(device)  # (B, C, H, W)
        # eval mode: a distilled model returns the mean of its two heads' logits
        probs = run(x).float().softmax(dim=-1)  # (B, num_classes)
        values, indices = probs.topk(k, dim=-1)  # (B, k)
        for j, (vals, idxs) in enumerate(zip(values.tolist(), indices.tolist())):
            top = [Prediction(index=i, label=names[i], probability=p) for p, i in zip(vals, idxs)]
            results.append(ImagePredictions(source=_describe(batch[j], start + j), top_k=top))
    return results


def format_predictions(results: list[ImagePredictions]) -> str:
    """Human-readable text: each image, then its classes with probabilities."""
    lines = []
    for r in results:
        lines.append(r.source)
        lines.extend(f"  {p.probability:7.2%}  {p.label} ({p.index})" for p in r.top_k)
    return "\n".join(lines)
