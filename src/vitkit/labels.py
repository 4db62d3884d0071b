"""Class names for a model's outputs.

``imagenet1k_labels.txt`` ships with the package: one short name per ImageNet-1k class in the standard
class order (sorted WordNet ids), made from the first WordNet lemma of each synset in timm's bundled
``imagenet_synsets.txt`` / ``imagenet_synset_to_lemma.txt``, with the two clashes renamed
("crane (bird)" / "crane (machine)", "maillot" / "tank suit").
"""

from __future__ import annotations

import logging
import os
from functools import cache
from importlib import resources
from pathlib import Path

import torch

from .data.digits import DIGITS_CLASSES
from .errors import DataError
from .fileio import parse_json
from .model import pretrained_cfg_of_model

logger = logging.getLogger(__name__)

BUILTIN_LABELS = ("imagenet-1k", "digits")


@cache
def _imagenet1k() -> tuple[str, ...]:
    text = resources.files("vitkit.data").joinpath("imagenet1k_labels.txt").read_text(encoding="utf-8")
    return tuple(line for line in text.splitlines() if line)


def _read_label_file(path: Path) -> list[str]:
    """One name per line (.txt), or a JSON list, or a JSON {index: name} mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"Cannot read label file {str(path)!r} ({exc}). Expected UTF-8 text with one class "
                        f"name per line, or a JSON list.") from None
    if path.suffix.lower() != ".json":
        return [line.strip() for line in text.splitlines() if line.strip()]
    data = parse_json(text, f"Label file {str(path)!r}", error=DataError,
                      fix="Give a JSON list of class names or a {\"0\": \"name\", ...} mapping.")
    if isinstance(data, dict):
        try:
            indexed = {int(k): str(v) for k, v in data.items()}
        except ValueError:
            raise DataError(f"Label file {str(path)!r} maps non-integer keys; "
                            f"expected {{\"0\": \"name\", ...}}.") from None
        if sorted(indexed) != list(range(len(indexed))):
            raise DataError(f"Label file {str(path)!r} must map every index 0..{len(indexed) - 1} to a name.")
        return [indexed[i] for i in range(len(indexed))]
    if isinstance(data, list):
        return [str(v) for v in data]
    raise DataError(f"Label file {str(path)!r} holds a JSON {type(data).__name__}; expected a list or a dict.")


def load_labels(name_or_path: str | os.PathLike) -> list[str]:
    """Class names from a built-in set ('imagenet-1k', 'digits') or a file (.txt lines, .json list/dict)."""
    key = str(name_or_path)
    if key == "imagenet-1k":
        return list(_imagenet1k())
    if key == "digits":
        return list(DIGITS_CLASSES)
    path = Path(key)
    if not path.is_file():
        raise DataError(f"Labels {key!r} are neither a built-in set ({', '.join(BUILTIN_LABELS)}) nor a file. "
                        f"Pass a text file with one class name per line.")
    return _read_label_file(path)


def labels_for_model(model: torch.nn.Module, labels: str | os.PathLike | list[str] | None = None) -> list[str]:
    """The class names of ``model``'s outputs: ``labels`` if given, else the set its pretrained_cfg names,
    else ImageNet-1k names for a 1000-class head, else 'class_<i>'."""
    num_classes = int(getattr(model, "num_classes", 0))
    if labels is not None:
        names = list(labels) if isinstance(labels, (list, tuple)) else load_labels(labels)
        if len(names) != num_classes:
            raise DataError(f"{len(names)} labels were given but the model predicts {num_classes} classes; "
                            f"give exactly one name per class.")
        return names
    cfg = pretrained_cfg_of_model(model)
    builtin = getattr(cfg, "label_names", None)
    if isinstance(builtin, (list, tuple)):  # class names stored with the model (e.g. a folder's classes)
        if len(builtin) == num_classes:
            return [str(n) for n in builtin]
        logger.info("the model stores %d class names but has %d classes; using class indices",
                    len(builtin), num_classes)
        builtin = None
    if builtin is None and num_classes == 1000:
        builtin = "imagenet-1k"
    if builtin in BUILTIN_LABELS:
        names = load_labels(builtin)
        if len(names) == num_classes:
            return names
        logger.info("label set %s has %d names but the model has %d classes; using class indices",
                       builtin, len(names), num_classes)
    return [f"class_{i}" for i in range(num_classes)]


def is_multi_label(model: torch.nn.Module) -> bool:
    """Whether ``model`` scores each class on its own (``pretrained_cfg.multi_label``) rather than with a softmax."""
    return bool(getattr(pretrained_cfg_of_model(model), "multi_label", False))


def class_scores(logits: torch.Tensor, *, multi_label: bool) -> torch.Tensor:
    """What the uses report for logits (B, num_classes): independent sigmoid scores for a multi-label model,
    softmax probabilities otherwise (float32, same shape)."""
    logits = logits.float()
    return logits.sigmoid() if multi_label else logits.softmax(dim=-1)
