"""Writing a model's weights in any checkpoint family's format."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ViTConfig
from ..errors import ConfigError
from ..model import VisionTransformer
from .families import families, get_family
from .infer import Known
from .load import from_checkpoint

logger = logging.getLogger(__name__)


def save_pretrained(model: VisionTransformer, path: str | os.PathLike[str], format: str = "vitkit") -> Path:
    """Save ``model`` so that its format's own loader rebuilds it with equal outputs.

    - ``'vitkit'``: a folder with model.safetensors and config.json (or one .safetensors file), which
      ``vitkit.from_pretrained`` rebuilds without being told the architecture;
    - ``'timm'``: a timm state dict as .safetensors (a file, or a folder with timm's config.json);
    - ``'hf'``: a transformers folder (ViTModel, ViTForImageClassification, DeiT..WithTeacher, Dinov2Model and
      its classifier, DINOv3ViTModel, CLIPVisionModel(WithProjection), Aimv2VisionModel or SiglipVisionModel, as
      the architecture requires);
    - ``'npz'``: Google's .npz naming, as timm's and big_vision's loaders read it (weights only: no
      preprocessing, class names or multi-label flag).

    Returns the path written. A model the format cannot express fails with a CheckpointError that says why.
    """
    if not isinstance(model, VisionTransformer):
        raise ConfigError(f"save_pretrained takes a vitkit VisionTransformer, got {type(model).__name__}.")
    family = get_family(format)  # an unknown name is a ConfigError naming the known ones
    if family.write is None:
        writable = ", ".join(name for name, f in families().items() if f.write is not None)
        raise ConfigError(f"Weights cannot be written in the {format!r} format (vitkit reads it): use one of "
                          f"{writable}.")
    out = family.write(model, Path(path).expanduser())
    logger.info("saved %s weights to %s", format, out)
    return out


# ViTConfig fields with no effect on an eval-mode forward pass
_NO_EFFECT = ("drop_rate", "attn_drop_rate", "drop_path_rate", "head_drop_rate")
# fields that change outputs only at another input size than the configured one (reported, not a failure)
ELSEWHERE = ("posemb_resample",)
# PretrainedCfg fields that decide pixels or printed names
_PREPROCESSING = ("input_size", "resize_size", "crop_mode", "interpolation", "mean", "std", "label_names",
                  "crop_rounding")
# settings that describe outputs without changing them (lost: a warning, not a failed conversion)
METADATA = ("label_names",)


def _effective(config: ViTConfig) -> dict[str, Any]:
    """The config as what it computes: defaults resolved, values read from the weights left out."""
    out = {k: v for k, v in config.to_dict().items() if k not in (*_NO_EFFECT, "mlp_align")}
    if not config.uses_act_layer:
        out["act_layer"] = None
    out.update(fc_norm=config.use_fc_norm, patch_bias=(not config.pre_norm) if config.patch_bias is None
               else config.patch_bias, posemb_resample=config.resample_style,
               mlp_ratio=config.mlp_hidden,  # as the hidden width it builds
               mlp_bias=config.mlp_has_bias,
               init_values=config.init_values is not None,  # the layer-scale values are loaded, not this one
               qk_scale=config.qk_scale or (config.embed_dim // config.num_heads) ** -0.5)
    return out


def _preprocessing(model: VisionTransformer) -> dict[str, Any]:
    pcfg = model.pretrained_cfg
    labels = pcfg.label_names
    if labels is None and model.num_classes == 1000:
        labels = "imagenet-1k"  # what predict prints for a 1000-class head without names
    out = {k: labels if k == "label_names" else getattr(pcfg, k) for k in _PREPROCESSING}
    if pcfg.crop_mode == "squash" and all((r - s) % 2 == 0 for r, s in zip(pcfg.resize_size, pcfg.input_size[1:])):
        out["crop_rounding"] = None  # a squash crops even margins (or none): rounding cannot move it
    return out


@dataclass
class Lost:
    """What a written file, loaded on its own, does differently from its source, as
    'name=source value (reads back as value)'."""

    outputs: list[str] = field(default_factory=list)  # settings that change outputs at the configured size
    elsewhere: list[str] = field(default_factory=list)  # those that act only at other input sizes
    metadata: list[str] = field(default_factory=list)  # descriptions of the outputs (class names)


def settings_lost(source: VisionTransformer, written: VisionTransformer) -> Lost:
    """Each architecture, numerics or preprocessing setting in which ``written`` (loaded on its own from the
    written file) differs from ``source``, sorted by what it changes."""
    lost = Lost()
    for before, after in ((_effective(source.config), _effective(written.config)),
                          (_preprocessing(source), _preprocessing(written))):
        for k, v in before.items():
            if after[k] != v:
                where = lost.elsewhere if k in ELSEWHERE else lost.metadata if k in METADATA else lost.outputs
                where.append(f"{k}={v!r} (reads back as {after[k]!r})")
    return lost


@dataclass
class Conversion:
    source: str
    path: Path
    format: str
    lost: Lost | None = None  # with verify: what the written file does not keep
    # with verify: the source and the written file, each loaded on its own as its library's user would (compare
    # them with ``vitkit.processor.compare_on_images``)
    source_model: VisionTransformer | None = field(default=None, repr=False)
    written_model: VisionTransformer | None = field(default=None, repr=False)


def convert(source: str | os.PathLike[str], dest: str | os.PathLike[str], *, to: str, format: str | None = None,
            verify: bool = False, known: Known | None = None, **overrides: Any) -> Conversion:
    """Load ``source`` (any format), write it to ``dest`` as ``to``.

    With ``verify``, load the written file on its own (as a user of the target library would, without the
    source's settings) beside the source loaded on its own: ``lost`` names every setting that differs (an
    activation or norm eps the format cannot store, a changed head or input size, preprocessing, class names);
    ``source_model`` and ``written_model`` are the two models, to be compared on real inputs.
    """
    model = from_checkpoint(source, format=format, known=known, **overrides)
    out = save_pretrained(model, dest, format=to)
    result = Conversion(source=os.fspath(source), path=out, format=to)
    if verify:
        original = from_checkpoint(source, format=format, known=known) if overrides else model
        again = from_checkpoint(out, format=to, known=known)
        result.lost = settings_lost(original, again)
        result.source_model, result.written_model = original, again
    return result
