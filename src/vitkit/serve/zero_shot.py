"""Zero-shot classification in the model worker: ``POST /zero-shot`` on a server whose model is image-text.

A batch of zero-shot requests runs the image tower once over all of its images, whatever labels each request
named; each distinct set of labels and templates is then embedded by the text tower once (and kept in a small
cache, so a client that sends the same labels again does not pay for the text tower), and each image is scored
against its own request's classes. The numbers are ``vitkit.zero_shot``'s: the same class embeddings
(``zeroshot.class_embeddings``), the logit scale and bias, a sigmoid for SigLIP and a softmax for CLIP.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch

from ..errors import ConfigError
from ..imagetext import ImageTextModel
from ..predict import ImagePredictions, Prediction, _above
from ..weights.text import ARCHITECTURES, OPEN_CLIP_CONFIG
from ..zeroshot import PRETRAINED, class_embeddings, resolve_templates
from .settings import ServeSettings

CACHE_SIZE = 64  # label sets whose class embeddings a worker keeps
THRESHOLD = 0.5  # SigLIP: also list the labels above this sigmoid score (as vitkit.zero_shot's default)


def is_image_text(model: Any) -> bool:
    """Whether ``model`` (a model spec ``vitkit serve`` takes) is an image-text model: an ``ImageTextModel``, a
    published image-text name, an open_clip folder or a transformers SiglipModel/CLIPModel folder."""
    if isinstance(model, ImageTextModel):
        return True
    if not isinstance(model, (str, os.PathLike)):
        return False
    path = os.fspath(model)
    if path in PRETRAINED and not os.path.exists(path):
        return True
    if not os.path.isdir(path):
        return False
    if os.path.isfile(os.path.join(path, OPEN_CLIP_CONFIG)):
        return True
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return False
    architectures = config.get("architectures") if isinstance(config, dict) else None
    return isinstance(architectures, list) and bool(architectures) and architectures[0] in ARCHITECTURES


def check_image_text_options(settings: ServeSettings, *, weights: Any, labels: str | None) -> None:
    """The options an image-text model cannot take, refused before anything starts."""
    if weights is not None or labels is not None:
        raise ConfigError("--weights and --class-names are for image classifiers: an image-text model (SigLIP, CLIP) "
                          "is served with its own weights, and each POST /zero-shot names its labels.")
    if (settings.precision, settings.backend) != ("fp32", "eager"):
        raise ConfigError(f"precision={settings.precision!r}, backend={settings.backend!r} is not available for an "
                          "image-text model: it is served in fp32 with eager PyTorch (leave out --precision and "
                          "--backend).")


class ZeroShotRunner:
    """Scores batches of zero-shot requests (image, labels, templates, top_k) with one image-text model."""

    def __init__(self, model: ImageTextModel) -> None:
        self.model = model
        self.cache: OrderedDict[tuple[tuple[str, ...], tuple[str, ...]], torch.Tensor] = OrderedDict()

    def _classes(self, labels: Sequence[str], templates: tuple[str, ...]) -> torch.Tensor:
        key = (tuple(labels), templates)
        if key in self.cache:
            self.cache.move_to_end(key)
        else:
            self.cache[key] = class_embeddings(self.model, list(labels), list(templates))  # (classes, D)
            if len(self.cache) > CACHE_SIZE:
                self.cache.popitem(last=False)
        return self.cache[key]

    @torch.inference_mode()
    def run(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each request's answer, as ``vitkit.zero_shot(...)[0].to_dict()`` gives it, named as it was sent."""
        model = self.model
        embeds = model.encode_image([item["image"] for item in items]).float()  # (B, D), unit length
        scale, bias = model.logit_scale.float().exp(), model.logit_bias.float()
        keys = [(tuple(item["labels"]), resolve_templates(item.get("templates"))) for item in items]
        answers: list[dict[str, Any]] = [{}] * len(items)
        for key in dict.fromkeys(keys):  # one text-tower pass per distinct label set in the batch
            rows = [i for i, k in enumerate(keys) if k == key]
            classes = self._classes(*key)
            probs = model.probabilities(embeds[rows] @ classes.t() * scale + bias)  # (rows, classes)
            for row, i in enumerate(rows):
                answers[i] = self._answer(items[i], probs[row], key[0])
        return answers

    def _answer(self, item: dict[str, Any], probs: torch.Tensor, names: Sequence[str]) -> dict[str, Any]:
        values, indices = probs.topk(min(item["top_k"], len(names)))
        top = [Prediction(index=i, label=names[i], probability=p) for p, i in zip(values.tolist(), indices.tolist())]
        result = ImagePredictions(source=item.get("name") or "<image 0>", top_k=top)
        if self.model.scoring == "sigmoid":
            result.labels, result.threshold = _above(probs, THRESHOLD, names), THRESHOLD
        return result.to_dict()
