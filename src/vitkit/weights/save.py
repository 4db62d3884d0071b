"""Writing a model's weights in any checkpoint family's format."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import CheckpointError
from ..model import VisionTransformer
from .formats import FORMATS, get_family

logger = logging.getLogger(__name__)


def save_pretrained(model: VisionTransformer, path: str | os.PathLike[str], format: str = "vitkit") -> Path:
    """Save ``model`` so that its format's own loader rebuilds it with equal outputs.

    - ``'vitkit'``: a folder with model.safetensors and config.json (or one .safetensors file), which
      ``vitkit.from_pretrained`` rebuilds without being told the architecture;
    - ``'timm'``: a timm state dict as .safetensors (a file, or a folder with timm's config.json);
    - ``'hf'``: a transformers folder (ViTModel, ViTForImageClassification, DeiT..WithTeacher or
      SiglipVisionModel, as the architecture requires);
    - ``'npz'``: Google's .npz naming, as timm's and big_vision's loaders read it.

    Returns the path written. A model the format cannot express fails with a CheckpointError that says why.
    """
    if not isinstance(model, VisionTransformer):
        raise CheckpointError(f"save_pretrained takes a vitkit VisionTransformer, got {type(model).__name__}.")
    if format not in FORMATS:
        raise CheckpointError(f"Unknown format {format!r}: expected one of {', '.join(FORMATS)}.")
    writer = get_family(format).write
    assert writer is not None  # every family in FORMATS has a writer
    out = writer(model, Path(path).expanduser())
    logger.info("saved %s weights to %s", format, out)
    return out
