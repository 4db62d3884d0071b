"""Writing a model's weights in any checkpoint family's format."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..model import VisionTransformer
from .families import FORMATS, get_family
from .infer import NON_INFERABLE, Known
from .load import from_checkpoint

logger = logging.getLogger(__name__)


def save_pretrained(model: VisionTransformer, path: str | os.PathLike[str], format: str = "vitkit") -> Path:
    """Save ``model`` so that its format's own loader rebuilds it with equal outputs.

    - ``'vitkit'``: a folder with model.safetensors and config.json (or one .safetensors file), which
      ``vitkit.from_pretrained`` rebuilds without being told the architecture;
    - ``'timm'``: a timm state dict as .safetensors (a file, or a folder with timm's config.json);
    - ``'hf'``: a transformers folder (ViTModel, ViTForImageClassification, DeiT..WithTeacher or
      SiglipVisionModel, as the architecture requires);
    - ``'npz'``: Google's .npz naming, as timm's and big_vision's loaders read it (weights only: no
      preprocessing, class names or multi-label flag).

    Returns the path written. A model the format cannot express fails with a CheckpointError that says why.
    """
    if not isinstance(model, VisionTransformer):
        raise ConfigError(f"save_pretrained takes a vitkit VisionTransformer, got {type(model).__name__}.")
    if format not in FORMATS:
        raise ConfigError(f"Unknown format {format!r}: expected one of {', '.join(FORMATS)}.")
    writer = get_family(format).write
    assert writer is not None  # every family in FORMATS has a writer
    out = writer(model, Path(path).expanduser())
    logger.info("saved %s weights to %s", format, out)
    return out


@torch.no_grad()
def max_output_difference(a: VisionTransformer, b: VisionTransformer, *, batch: int = 2, seed: int = 0) -> float:
    """The largest absolute difference between two models' features and outputs on one random batch."""
    c = a.config
    x = torch.randn(batch, c.in_chans, *c.img_size, generator=torch.Generator().manual_seed(seed))
    a, b = a.eval(), b.eval()
    diffs = [(a.forward_features(x) - b.forward_features(x)).abs().max(), (a(x) - b(x)).abs().max()]
    return float(max(diffs))


@dataclass
class Conversion:
    source: str
    path: Path
    format: str
    max_diff: float | None = None  # with verify: source vs written, same input


def convert(source: str | os.PathLike[str], dest: str | os.PathLike[str], *, to: str, format: str | None = None,
            verify: bool = False, known: Known | None = None, **overrides: Any) -> Conversion:
    """Load ``source`` (any format), write it to ``dest`` as ``to``; with ``verify``, reload the written
    checkpoint and measure the largest output difference on a random batch."""
    model = from_checkpoint(source, format=format, known=known, **overrides)
    out = save_pretrained(model, dest, format=to)
    result = Conversion(source=os.fspath(source), path=out, format=to)
    if verify:
        # what the written format cannot store (heads, eps, activation) is carried over from the source
        carried = {k: getattr(model.config, k) for k in NON_INFERABLE}
        again = from_checkpoint(out, format=to, known=known, **carried)
        result.max_diff = max_output_difference(model, again)
    return result
