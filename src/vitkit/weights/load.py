"""Loading as a pipeline: read -> detect format -> convert to vitkit names -> adapt -> strict load.

The model is built on the meta device and the checkpoint's tensors are assigned to it (``assign=True``),
so a memory-mapped file is never copied: loading holds one copy of the weights.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import PretrainedCfg, ViTConfig, check_fields
from ..errors import CheckpointError, ConfigError, Hint
from ..model import VisionTransformer
from . import validate
from .adapt import Adapted, Shape, adapt
from .families import detect_format
from .formats import Converted, Family
from .infer import Known, pretrained_cfg_for, stated_config
from .readers import read_checkpoint

logger = logging.getLogger(__name__)
MAX_ROWS = 25  # rows per section of a mismatch table
_BLOCK_INDEX = re.compile(r"(?<=blocks\.)\d+(?=\.)")
NOT_STRICT = Hint(", or pass strict=False to load the tensors that fit and initialise the rest", option="strict",
                  cli=", or pass {flag} to load the tensors that fit and initialise the rest")
# a checkpoint loaded into a registry model: it can build its own model instead
OWN_MODEL = Hint("; vitkit.from_pretrained(FILE) builds the model the checkpoint describes",
                 cli="; --model FILE without --weights builds the model the checkpoint describes")


@dataclass
class LoadReport:
    """What happened to every tensor while loading a checkpoint into a model."""

    source: str
    format: str
    missing: list[str] = field(default_factory=list)  # in the model, not in the checkpoint
    unexpected: list[str] = field(default_factory=list)  # in the checkpoint, not in the model
    mismatched: list[tuple[str, Shape, Shape]] = field(default_factory=list)  # (name, expected, found)
    newly_initialized: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # in the checkpoint, deliberately not loaded
    adapted: list[str] = field(default_factory=list)  # notes: resampled, channel-adapted, ...
    numerics: str = ""  # the activation, norm eps and resampling the model runs with, against the file's reference
    found: dict[str, Shape] = field(default_factory=dict, repr=False)
    expected: dict[str, Shape] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def table(self) -> str:
        """Missing, unexpected and mis-shaped tensors as an aligned table."""
        rows: list[tuple[str, str, str]] = []
        sections = [("missing (in the model, not in the checkpoint)", [(k, self.expected.get(k), None)
                                                                       for k in self.missing]),
                    ("unexpected (in the checkpoint, not in the model)", [(k, None, self.found.get(k))
                                                                          for k in self.unexpected]),
                    ("mis-shaped", self.mismatched)]
        for title, items in sections:
            if not items:
                continue
            rows.append((f"{title}: {len(items)}", "expected", "found"))
            grouped = _grouped(items)
            for name, want, have in grouped[:MAX_ROWS]:
                rows.append((f"  {name}", _fmt(want), _fmt(have)))
            if len(grouped) > MAX_ROWS:
                rows.append((f"  ... and {len(grouped) - MAX_ROWS} more", "", ""))
        width = max((len(r[0]) for r in rows), default=0) + 2
        return "\n".join(f"{a:<{width}}{b:<22}{c}".rstrip() for a, b, c in rows)

    def summary(self) -> str:
        parts = [f"loaded {self.source} ({self.format})"]
        for label, items in (("adapted", self.adapted), ("dropped", self.dropped),
                             ("newly initialized", self.newly_initialized), ("missing", self.missing),
                             ("unexpected", self.unexpected), ("mis-shaped", [m[0] for m in self.mismatched])):
            if items:
                parts.append(f"{label}: {', '.join(items)}")
        return "; ".join(parts) + (f"\n{self.numerics}" if self.numerics else "")


def _span(indices: list[int]) -> str:
    idx = sorted(set(indices))
    if len(idx) == 1:
        return str(idx[0])
    if idx == list(range(idx[0], idx[-1] + 1)):
        return f"{{{idx[0]}-{idx[-1]}}}"
    return "{" + ",".join(map(str, idx)) + "}"


def _grouped(items: list[tuple[str, Shape | None, Shape | None]]) -> list[tuple[str, Shape | None, Shape | None]]:
    """Rows that differ only in their block index, as one row: ``blocks.{0-11}.norm1.weight``."""
    groups: dict[tuple[str, Shape | None, Shape | None], list[int]] = {}
    for name, want, have in items:
        m = _BLOCK_INDEX.search(name)
        key = (_BLOCK_INDEX.sub("{}", name, count=1) if m else name, want, have)
        groups.setdefault(key, []).append(int(m.group()) if m else -1)
    return [(pattern.replace("{}", _span(idx), 1) if idx[0] >= 0 else pattern, want, have)
            for (pattern, want, have), idx in groups.items()]


def _ordered(names: list[str], expected: dict[str, Shape]) -> list[str]:
    """``names`` in the model's parameter order (head.weight before head.bias)."""
    wanted = set(names)
    return [k for k in expected if k in wanted]


def _fmt(shape: Shape | None) -> str:
    return "-" if shape is None else str(tuple(shape))


# ---------------------------------------------------------------------- steps
def compare(state: dict[str, torch.Tensor], expected: dict[str, Shape], report: LoadReport) -> None:
    """Fill the report's missing / unexpected / mismatched lists (newly initialized keys are not missing)."""
    report.found = {k: tuple(v.shape) for k, v in state.items()}
    report.expected = expected
    fresh = set(report.newly_initialized)
    report.missing = [k for k in expected if k not in state and k not in fresh]
    report.unexpected = sorted(k for k in state if k not in expected)
    report.mismatched = [(k, expected[k], report.found[k]) for k in expected
                         if k in state and report.found[k] != tuple(expected[k])]


def _fail(report: LoadReport, what: str, own_model: bool) -> CheckpointError:
    """One line that says what does not fit and what to do, then the full table. ``own_model``: the model was
    built by name, so the checkpoint's own architecture is an alternative."""
    counts = ", ".join(f"{len(items)} {label}" for label, items in (
        ("missing", report.missing), ("unexpected", report.unexpected), ("mis-shaped", report.mismatched)) if items)
    if report.mismatched:
        name, want, have = report.mismatched[0]
        first = f"e.g. {name} expected {_fmt(want)}, found {_fmt(have)}"
    else:
        first = f"e.g. {(report.missing or report.unexpected)[0]}"
    hints = (OWN_MODEL, NOT_STRICT) if own_model else (NOT_STRICT,)
    return CheckpointError(
        f"{report.source} ({report.format} format) does not fit {what}: {counts} tensors ({first}). "
        f"Check that the checkpoint is for this architecture (`vitkit weights FILE` lists it"
        f"{OWN_MODEL.text if own_model else ''}){NOT_STRICT.text}.\n{report.table()}", hints=hints)


def _init_fresh(model: VisionTransformer, names: list[str], dtype: torch.dtype) -> None:
    """Materialise parameters the checkpoint did not provide (still on the meta device) and initialise them
    with the model's own initialisation (``VisionTransformer.init_parameters``)."""
    for name in names:
        owner_name, _, attr = name.rpartition(".")
        owner = model.get_submodule(owner_name)
        old = getattr(owner, attr)
        setattr(owner, attr, nn.Parameter(torch.empty(old.shape, dtype=dtype), requires_grad=old.requires_grad))
    model.init_parameters(names)


def _assign(model: VisionTransformer, state: dict[str, torch.Tensor], fresh: list[str],
            device: torch.device, dtype: torch.dtype, source: str, allow_nonfinite: bool) -> None:
    state = {k: v.to(dtype).contiguous() for k, v in state.items()}
    if not (allow_nonfinite or os.environ.get(validate.ALLOW_NONFINITE_ENV) == "1"):
        validate.check_finite(state, source)
    model.load_state_dict(state, strict=False, assign=True)
    _init_fresh(model, fresh, dtype)
    for name, buf in list(model.named_buffers()):  # non-persistent buffers (a sincos2d placeholder) are not loaded
        if buf.is_meta:
            owner_name, _, attr = name.rpartition(".")
            model.get_submodule(owner_name).register_buffer(attr, torch.zeros(buf.shape, dtype=dtype),
                                                            persistent=False)
    still_meta = [n for n, p in model.named_parameters() if p.is_meta]
    if still_meta:  # a bug, not a user error: every parameter was either loaded or initialised
        raise RuntimeError(f"parameters left uninitialised after loading: {still_meta}")
    if device.type != "cpu":
        model.to(device)


@dataclass
class Fitted:
    """A checkpoint's tensors fitted to a config (adapted, compared, checked), ready to become a model's weights."""

    state: dict[str, torch.Tensor]
    report: LoadReport


def fit(converted: Converted, family: Family, config: ViTConfig, *, source: str, strict: bool = True,
        what: str | None = None, may_adapt: bool = True, by_name: bool = False) -> Fitted:
    """Adapt ``converted`` to the shapes of ``config`` and compare them (strictly, by default).

    Tensors that are not floating point are refused. ``may_adapt=False``: no head replacement or resampling
    (the config is the file's own). ``by_name``: the config is a named model's, not the file's (a misfit then
    suggests the file's own architecture). Not strict: what does not fit is left out and initialised."""
    validate.check_dtypes(converted.state, source)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in VisionTransformer(config).state_dict().items()}
    # a file loaded as it describes itself must fit as it is: resampling it to its own (damaged) config
    # would load changed numbers without a word
    adapted = adapt(converted.state, expected, config, style=family.numerics.load_style(config),
                    source_grid=_source_grid(converted, source)) if may_adapt else Adapted(dict(converted.state))
    report = LoadReport(source=source, format=family.name,
                        newly_initialized=_ordered(adapted.newly_initialized, expected),
                        dropped=sorted(converted.dropped + adapted.dropped), adapted=adapted.notes,
                        numerics=family.numerics.line(config, converted.hints))
    compare(adapted.state, expected, report)
    if not report.ok:
        if strict:
            raise _fail(report, what or "the model", by_name)
        logger.warning("not strict: %s", report.summary())
        for key in report.unexpected + [m[0] for m in report.mismatched]:
            adapted.state.pop(key)
        report.newly_initialized = _ordered([*report.newly_initialized, *report.missing,
                                             *(m[0] for m in report.mismatched)], expected)
    return Fitted(adapted.state, report)


def build(config: ViTConfig, *, pretrained_cfg: PretrainedCfg | None = None, model_name: str | None = None,
          weights: Fitted | None = None, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
          allow_nonfinite: bool = False) -> VisionTransformer:
    """The one builder of vitkit models: a ``VisionTransformer`` of ``config`` with what it knows about itself
    (``pretrained_cfg``, ``model_name``, and with ``weights`` the ``load_report``).

    Without ``weights`` the parameters are freshly initialised on ``device`` (the model is left in training
    mode, as ``nn.Module`` is built). With ``weights`` the model is built on the meta device and the tensors
    become its parameters (no copy of a memory-mapped file) in ``dtype`` (float32 by default), what the file
    did not provide initialised; NaN/Inf weights are refused unless ``allow_nonfinite``; the model is in
    eval mode."""
    if weights is None:
        with torch.device(device) if device is not None else contextlib.nullcontext():
            model = VisionTransformer(config)
        if dtype is not None:
            model.to(dtype)
    else:
        with torch.device("meta"):
            model = VisionTransformer(config)
        report = weights.report
        _assign(model, weights.state, report.newly_initialized, torch.device(device or "cpu"), dtype or torch.float32,
                report.source, allow_nonfinite)
        if report.newly_initialized:
            logger.warning("newly initialized: %s", ", ".join(report.newly_initialized))
        for note in [*report.adapted, report.numerics]:
            logger.info("%s", note)
        model.load_report = report
        model.eval()
    model.pretrained_cfg, model.model_name = pretrained_cfg, model_name
    return model


def _source_grid(converted: Converted, source: str) -> tuple[int, int] | None:
    """The checkpoint's patch grid when its config states the image size (non-square grids need it)."""
    img = converted.hints.get("img_size")
    w = converted.state.get("patch_embed.proj.weight")
    if img is None or w is None or w.ndim != 4:
        return None
    h, wd = validate.image_size(img, source)
    return (h // int(w.shape[2]), wd // int(w.shape[3]))


# ---------------------------------------------------------------------- public entry points
def _read(source: str | os.PathLike[str], format: str | None) -> tuple[Family, Converted]:
    ckpt = read_checkpoint(source)
    family = detect_format(ckpt, format)
    return family, family.convert(ckpt)


def load_pretrained(source: str | os.PathLike[str], *, config: ViTConfig, pretrained_cfg: PretrainedCfg | None = None,
                    device: str | torch.device | None = None, model_name: str | None = None,
                    format: str | None = None, strict: bool = True, dtype: torch.dtype | None = None,
                    allow_nonfinite: bool = False, explicit: tuple[str, ...] = (), adapt: bool = True,
                    ) -> VisionTransformer:
    """A model of ``config`` (e.g. from the registry) with the weights of ``source`` loaded into it
    (NaN/Inf weights refused unless ``allow_nonfinite``; ``adapt=False``: the weights must fit as they are, no
    head replaced and no position embedding resampled).

    The numerics the file's family states (activation, norm eps, resampling) replace the config's, except for
    the fields named in ``explicit`` (those the caller chose)."""
    family, converted = _read(source, format)
    config = family.numerics.with_stated(config, converted.hints, explicit)
    what = f"{model_name or 'the model'} (embed_dim={config.embed_dim}, depth={config.depth}, " \
           f"patch={config.patch_size[0]}, img_size={config.img_size[0]})"
    fitted = fit(converted, family, config, source=os.fspath(source), strict=strict, what=what, may_adapt=adapt,
                 by_name=True)
    return build(config, pretrained_cfg=pretrained_cfg or pretrained_cfg_for(converted, config, os.fspath(source)),
                 model_name=model_name or converted.model_name or Path(os.fspath(source)).stem, weights=fitted,
                 device=device, dtype=dtype, allow_nonfinite=allow_nonfinite)


def from_checkpoint(source: str | os.PathLike[str], *, format: str | None = None, num_classes: int | None = None,
                    img_size: int | tuple[int, int] | None = None, strict: bool = True,
                    device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                    known: Known | None = None, allow_nonfinite: bool = False, **overrides: Any) -> VisionTransformer:
    """Build the model a checkpoint describes and load it.

    The architecture comes from the checkpoint itself: vitkit's JSON config, a Hugging Face
    config.json, or (timm, npz) the tensor shapes. ``num_classes`` (a fresh head when it differs),
    ``img_size`` (position embeddings resampled) and other ViTConfig fields in ``overrides`` change it;
    ``representation_size=None`` drops a pre-logits layer. ``format`` forces the checkpoint family.
    ``known`` architectures by name (the registry's, from ``vitkit.from_pretrained``) fill what a file does
    not state (the head count of a width, a timm folder's named architecture). NaN/Inf weights are refused
    unless ``allow_nonfinite``.
    """
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    if img_size is not None:
        overrides["img_size"] = img_size
    check_fields(overrides)  # the caller's values: a wrong type is theirs, not the file's
    family, converted = _read(source, format)
    config = stated_config(converted, known, os.fspath(source), **overrides)
    fitted = fit(converted, family, config, source=os.fspath(source), strict=strict,
                 what="the architecture it states or implies", may_adapt=bool(overrides))
    return build(config, pretrained_cfg=pretrained_cfg_for(converted, config, os.fspath(source)),
                 model_name=converted.model_name or Path(os.fspath(source)).stem, weights=fitted, device=device,
                 dtype=dtype, allow_nonfinite=allow_nonfinite)


def with_patch_size(model: VisionTransformer, patch_size: int | tuple[int, int]) -> VisionTransformer:
    """A copy of ``model`` that runs at another patch size, as FlexiViT models are trained to: the patch-embedding
    kernel resampled by FlexiViT's pseudo-inverse resize and the position embedding resampled to the new patch grid
    of the same input size, both in the model's resampling style (``ViTConfig.resample_style``; timm's by default,
    as its ``resample_patch_embed`` and ``resample_abs_pos_embed`` do). The copy is on the model's device, in its
    dtype and mode, with its preprocessing and name; the caller's model is not changed."""
    if not isinstance(model, VisionTransformer):
        raise ConfigError(f"with_patch_size takes a vitkit VisionTransformer, got {type(model).__name__}.")
    c = model.config
    size = (patch_size, patch_size) if isinstance(patch_size, int) else patch_size
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise ConfigError(f"patch_size={patch_size!r} is not allowed: expected a positive whole number of pixels "
                          f"or a pair (height, width), e.g. 8.")
    size = (int(size[0]), int(size[1]))
    if c.img_size[0] % size[0] or c.img_size[1] % size[1]:
        fits = [str(p) for p in range(8, 49) if not c.img_size[0] % p and not c.img_size[1] % p]
        raise ConfigError(f"patch_size={patch_size!r} does not divide the model's input size {c.img_size[0]}x"
                          f"{c.img_size[1]}: use a patch size that divides both sides ({', '.join(fits[:8])}).")
    config = c.replace(patch_size=size)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in VisionTransformer(config).state_dict().items()}
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    adapted = adapt(state, expected, config, style=c.resample_style, source_grid=c.grid_size)
    param = next(model.parameters())
    out = build(config, pretrained_cfg=model.pretrained_cfg, model_name=model.model_name, device=param.device,
                dtype=param.dtype)
    out.load_state_dict(adapted.state, strict=True)
    return out.train(model.training)
