"""Zero-shot classification with image-text models: class names become a classifier head.

Each label is put into every template, the texts are embedded and averaged per class (as open_clip's
``build_zero_shot_classifier``), and the class embeddings, multiplied by the model's logit scale and with
its bias, become the head of an ordinary ``VisionTransformer`` whose features are unit length. That
classifier is what ``zero_shot`` runs through ``vitkit.predict``: sigmoid scores for SigLIP (a multi-label
model), a softmax for CLIP.
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

import torch
import torch.nn.functional as F

from .choices import TEMPLATE_SETS, ZERO_SHOT_MODELS
from .config import PretrainedCfg
from .errors import ConfigError
from .imagetext import ImageTextModel
from .model import VisionTransformer
from .patches import processor_for
from .predict import ImagePredictions, predict
from .processor import ImageInput
from .weights import build
from .weights.text import OPEN_CLIP_CONFIG, read_open_clip, read_transformers

DEFAULT_TEMPLATES = ("a photo of a {}.",)
# published image-text models by name: their transformers folders on the Hugging Face Hub (through its cache)
PRETRAINED = ZERO_SHOT_MODELS


@lru_cache(maxsize=1)
def _named_templates() -> dict[str, tuple[str, ...]]:
    text = resources.files("vitkit.data").joinpath("zero_shot_templates.json").read_text(encoding="utf-8")
    sets = {name: tuple(items) for name, items in json.loads(text).items()}
    assert tuple(sets) == TEMPLATE_SETS  # the CLI lists the names without reading the file
    return sets


def template_sets() -> list[str]:
    """Names of the built-in template sets ('imagenet': open_clip's 80 OpenAI ImageNet templates)."""
    return sorted(_named_templates())


def resolve_templates(templates: str | Sequence[str] | None) -> tuple[str, ...]:
    """Templates with one ``{}`` each: given, a built-in set by name, or the default ('a photo of a {}.')."""
    if templates is None:
        return DEFAULT_TEMPLATES
    if isinstance(templates, str):
        templates = [templates]
    named = _named_templates()
    out = tuple(t for item in templates for t in (named.get(item, (item,)) if isinstance(item, str) else (item,)))
    if not out:
        raise ConfigError("templates=[] is not allowed: expected templates with '{}' for the label, "
                          f"a set name ({', '.join(template_sets())}) or None for the default.")
    for t in out:
        if not isinstance(t, str) or [f for _, f, _, _ in string.Formatter().parse(t) if f is not None] != [""]:
            raise ConfigError(f"Template {t!r} is not allowed: expected text with exactly one '{{}}' where the label "
                              f"goes, e.g. 'a photo of a {{}}.', or a set name ({', '.join(template_sets())}).")
    return out


def check_labels(labels: Sequence[str] | None) -> list[str]:
    """Class names: at least one, each with a letter or digit, no two the same."""
    if labels is None or isinstance(labels, str) or not list(labels):
        raise ConfigError(f"labels={labels!r} is not allowed: expected a list of class names, e.g. "
                          "['cat', 'dog'] (on the command line --labels 'cat,dog' or --labels-file).")
    names = [str(x).strip() if isinstance(x, str) else x for x in labels]
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if not isinstance(name, str) or not any(ch.isalnum() for ch in name):
            raise ConfigError(f"Label {i} ({labels[i]!r}) is not allowed: expected a class name with a letter or "
                              "digit (empty or punctuation-only labels tokenize to nothing).")
        if name.casefold() in seen:
            raise ConfigError(f"Labels {seen[name.casefold()]} and {i} are both {name!r}: expected each class once "
                              "(remove the duplicate).")
        seen[name.casefold()] = i
    return names


@torch.inference_mode()
def class_embeddings(model: ImageTextModel, labels: Sequence[str], templates: str | Sequence[str] | None = None,
                     ) -> torch.Tensor:
    """Unit-length class embeddings (classes, D): each label in each template, embedded, averaged, normalised."""
    names, temps = check_labels(labels), resolve_templates(templates)
    texts = [t.format(name) for name in names for t in temps]
    embeds = model.encode_text(texts).float()  # (classes * templates, D)
    return F.normalize(embeds.reshape(len(names), len(temps), -1).mean(dim=1), dim=-1)


def zero_shot_classifier(model: ImageTextModel, labels: Sequence[str], templates: str | Sequence[str] | None = None,
                         ) -> VisionTransformer:
    """A ``VisionTransformer`` classifier for ``labels``: the image tower, unit-length features, and a head of
    the class embeddings with the logit scale and bias folded in. Its class names are set; a SigLIP model's
    classifier is multi-label (sigmoid scores), a CLIP model's a softmax classifier. ``model`` is not changed."""
    if not isinstance(model, ImageTextModel):
        raise ConfigError(f"zero_shot_classifier needs an image-text model (SigLIP, CLIP), got {type(model).__name__}.")
    weights = class_embeddings(model, labels, templates)
    names = check_labels(labels)
    tower = model.visual
    pcfg = tower.pretrained_cfg or PretrainedCfg(input_size=(tower.config.in_chans, *tower.config.img_size))
    net = build(tower.config.replace(num_classes=len(names), normalize_features=True),
                pretrained_cfg=pcfg.replace(num_classes=len(names), label_names=tuple(names),
                                            multi_label=model.scoring == "sigmoid"), model_name=tower.model_name)
    state = {k: v for k, v in tower.state_dict().items()}
    with torch.no_grad():
        scale, bias = model.logit_scale.detach().float().exp(), model.logit_bias.detach().float()
        state["head.weight"] = (weights * scale).to(tower.pos_embed.dtype)  # (classes, D)
        state["head.bias"] = bias.expand(len(names)).clone().to(tower.pos_embed.dtype)
    net.load_state_dict(state)
    return net.to(tower.pos_embed.device).eval()


def zero_shot(images: ImageInput | Sequence[ImageInput], labels: Sequence[str], *, model: ImageTextModel | str,
              templates: str | Sequence[str] | None = None, top_k: int = 5, **predict_options: Any,
              ) -> list[ImagePredictions]:
    """The ``top_k`` most probable of ``labels`` for each image, as ``vitkit.predict`` returns them.

    ``model``: an image-text model or a folder it is loaded from (``load_image_text``). ``templates``: texts
    with ``{}`` for the label (averaged per class), a built-in set ('imagenet'), or None for 'a photo of a {}.'.
    SigLIP's scores are sigmoids (each result also lists labels above ``threshold``), CLIP's a softmax over
    the labels. Other keyword options (``batch_size``, ``device``, ``threshold``, ...) go to ``predict``.
    """
    check_labels(labels)
    resolve_templates(templates)
    net = load_image_text(model) if isinstance(model, (str, os.PathLike)) else model
    return predict(images, zero_shot_classifier(net, labels, templates), top_k=top_k, **predict_options)


def load_image_text(source: str | os.PathLike[str]) -> ImageTextModel:
    """An image-text model from a name in ``PRETRAINED`` (its published weights, through the Hugging Face
    cache), a transformers SiglipModel, Siglip2Model (NaFlex) or CLIPModel folder, an ``hf-hub:`` id, or an
    open_clip CLIP folder (open_clip_config.json), with its tokenizer and its image preprocessing (``encode_text``
    takes strings, ``encode_image`` takes images, at their own aspect ratio for a NaFlex model)."""
    folder = os.fspath(source)
    if folder in PRETRAINED and not os.path.exists(folder):
        source = folder = f"hf-hub:{PRETRAINED[folder]}"
    is_open_clip = os.path.isdir(folder) and os.path.isfile(os.path.join(folder, OPEN_CLIP_CONFIG))
    model = read_open_clip(source) if is_open_clip else read_transformers(source)
    if model.visual.pretrained_cfg is not None:
        model.image_processor = processor_for(model.visual)  # patch sequences for a NaFlex tower
    return model
