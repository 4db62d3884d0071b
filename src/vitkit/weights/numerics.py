"""Which numbers a checkpoint's model computes: one frozen description per family, resolved once at load.

Besides the tensors, three settings decide a ViT's outputs: the activation, the norm epsilon and how position
embeddings are resampled to another grid (``NUMERIC_FIELDS``). Each family's files are run by default as the
family's reference code runs them (``FamilyNumerics.reference``: Google's Flax code for a ``.npz``, transformers
for an HF folder, ...): what a file's config states replaces a named architecture's defaults unless the
caller chose the field (``with_stated``); ``line`` says in one line what the model runs with and how that
departs from the reference.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from ..config import ViTConfig
from ..posemb import style_name

logger = logging.getLogger(__name__)

# The fields, besides the tensors, that decide a checkpoint's numbers (a family's hints state them)
NUMERIC_FIELDS = ("act_layer", "norm_eps", "posemb_resample")


@dataclass(frozen=True)
class FamilyNumerics:
    """How a family's reference code computes with the family's files."""

    reference: str  # the code a family's files are run as by default ("Google's Flax code", "timm", ...)
    posemb_style: str  # the reference loader's resampling of position embeddings to another grid
    timm_runs_with: tuple[tuple[str, str], ...] = ()  # where timm runs the family's files otherwise

    def load_style(self, config: ViTConfig) -> str:
        """The resampling used at load: the config's when it names one, else the reference loader's.

        'timm' on a Google file means what timm does with such files (its npz loader: bilinear, corners not
        aligned)."""
        style = config.posemb_resample or self.posemb_style
        return "timm_npz" if style == "timm" and self.posemb_style in ("google", "timm_npz") else style

    def with_stated(self, config: ViTConfig, stated: Mapping[str, object], explicit: tuple[str, ...] = ()) -> ViTConfig:
        """``config`` with the numerics a file ``stated`` (e.g. HF ViT's 1e-12 eps, a Google file's tanh GELU),
        so a named architecture loaded from it computes what the reference does; ``explicit`` fields (the
        caller's) are kept."""
        changes = {k: stated[k] for k in NUMERIC_FIELDS if k not in explicit and k in stated
                   and stated[k] != getattr(config, k)}
        if changes:
            logger.info("using the checkpoint's %s", ", ".join(f"{k}={v!r}" for k, v in changes.items()))
        return config.replace(**changes) if changes else config

    def line(self, config: ViTConfig, stated: Mapping[str, object]) -> str:
        """One line saying which numerics a model loaded from this family's file runs with, and how they differ
        from the ones the file states (e.g. a Google file asked to run with timm's numbers)."""
        resample = config.resample_style
        act = f"act_layer={config.act_layer!r}" if config.uses_act_layer else "SiLU-gated SwiGLU"
        now = f"{act}, norm_eps={config.norm_eps:g}"
        if config.posemb == "learn":  # a learned table is resampled to other grids
            now += f", posemb_resample={resample!r} ({style_name(resample)})"
        elif config.posemb == "sincos2d":
            now += ", posemb='sincos2d'"
        if config.rope != "none":
            now += f", rope={config.rope!r} (temperature {config.rope_temperature:g})"
        departs = {k: v for k, v in stated.items() if k in NUMERIC_FIELDS and getattr(config, k) != v}
        if departs:
            told = ", ".join(f"{k}={v!r}" for k, v in departs.items())
            return f"numerics: {now}; not {self.reference}'s ({told})"
        line = f"numerics: {now}, as {self.reference} runs this file"
        if self.timm_runs_with:
            line += f" ({', '.join(f'{k}={v!r}' for k, v in self.timm_runs_with)} give timm's numbers)"
        return line


GOOGLE = FamilyNumerics("Google's Flax code", "google", (("act_layer", "gelu"), ("posemb_resample", "timm")))
TIMM = FamilyNumerics("timm", "timm")
TRANSFORMERS = FamilyNumerics("transformers", "hf")
VITKIT = FamilyNumerics("vitkit", "timm")
