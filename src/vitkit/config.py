"""ViTConfig: every hyperparameter of a Vision Transformer, validated when built."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import ConfigError

GLOBAL_POOLS = ("token", "avg", "map", "none")
NORM_LAYERS = ("layernorm", "rmsnorm")
ACT_LAYERS = ("gelu", "gelu_tanh", "quick_gelu", "relu", "silu")
# learned position embeddings, big_vision's fixed 2-D sin-cos ones, or none (rotary embeddings alone: DINOv3)
POSEMBS = ("learn", "sincos2d", "none")
ROPES = ("none", "eva", "dinov3")  # 2-D rotary embedding forms (rope.py)
GRID_INDEXINGS = ("ij", "xy")
MLP_LAYERS = ("mlp", "swiglu", "swiglu_packed")
# How position embeddings are resampled to another grid, named by the code whose numbers they give (posemb.py)
POSEMB_RESAMPLES = ("timm", "timm_npz", "hf", "google")


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` naming the choice closest to ``word``, or ``''`` when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def did_you_mean_any(word: str, choices: Iterable[str], n: int = 3, cutoff: float = 0.5) -> str:
    """`` Did you mean: a, b?`` naming up to ``n`` choices close to ``word``, or ``''`` when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=n, cutoff=cutoff)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def nearest_multiple(value: int, step: int) -> int:
    """The positive multiple of ``step`` nearest to ``value`` (for "e.g. resize to ..." hints)."""
    return max(1, round(value / step)) * step


def reject_unknown_fields(cls: type, names: Any, what: str) -> None:
    """Raise a ConfigError naming each of ``names`` that is not a field of dataclass ``cls``, with the
    closest field as a hint."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(names) - known)
    if unknown:
        hints = [f"{u}{did_you_mean(u, known)}" for u in unknown]
        raise ConfigError(f"Unknown {what}: {', '.join(hints)}. Known: {', '.join(sorted(known))}.")


def _pair(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[1]))


# ---------------------------------------------------------------------- size limits
L = TypeVar("L")


def limits_from_env(limits: L, variable: str) -> L:
    """``limits`` with fields overridden by ``VARIABLE="name=value,name=value"`` (unknown names ignored)."""
    for item in filter(None, os.environ.get(variable, "").split(",")):
        name, _, value = (s.strip() for s in item.partition("="))
        if name in {f.name for f in dataclasses.fields(limits)}:  # type: ignore[arg-type]
            try:
                setattr(limits, name, type(getattr(limits, name))(float(value)))
            except ValueError:
                continue
    return limits


@dataclass
class SizeLimits:
    """Upper bounds on a ViTConfig, checked before any layer is built, so a hostile or mistyped config fails
    at once instead of allocating for minutes. Every published ViT (ViT-22B included) fits. To build a bigger
    model, raise a bound: ``vitkit.config.LIMITS.max_depth = 1024``, or set the environment variable
    ``VITKIT_CONFIG_LIMITS="max_depth=1024,max_params=1e11"``."""

    max_depth: int = 512
    max_embed_dim: int = 32768
    max_num_heads: int = 1024
    max_num_classes: int = 1_000_000
    max_img_size: int = 16384  # pixels per side
    max_tokens: int = 262_144  # patch tokens per image
    max_in_chans: int = 4096
    max_reg_tokens: int = 1024
    max_mlp_ratio: float = 64.0
    max_params: int = 30_000_000_000


CONFIG_LIMITS_ENV = "VITKIT_CONFIG_LIMITS"
LIMITS = limits_from_env(SizeLimits(), CONFIG_LIMITS_ENV)

# ---------------------------------------------------------------------- field types
_POSITIVE_INTS = ("in_chans", "embed_dim", "depth", "num_heads")
_COUNTS = ("num_classes", "reg_tokens", "embed_proj", "mlp_align")
_NUMBERS = ("mlp_ratio", "drop_rate", "attn_drop_rate", "drop_path_rate", "head_drop_rate", "norm_eps",
            "rope_temperature", "rope_grid_offset")
_OPTIONAL_NUMBERS = ("qk_scale", "init_values", "attn_pool_mlp_ratio")
_BOOLS = ("qkv_bias", "qk_norm", "proj_bias", "distilled", "class_token", "no_embed_class", "pre_norm", "final_norm",
          "normalize_features", "rope_rotate_half", "qkv_fused", "k_bias", "attn_norm", "mlp_norm", "patch_norm")
_OPTIONAL_BOOLS = ("patch_bias", "fc_norm", "mlp_bias")
_STRINGS = ("norm_layer", "act_layer", "global_pool", "rope", "rope_grid_indexing", "mlp_layer")
_SIZES = ("img_size", "patch_size")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _expected_type(name: str, value: Any) -> str | None:
    """What ``name`` must hold, if ``value`` has the wrong type (JSON configs bring strings, lists, nulls)."""
    if name in _POSITIVE_INTS or name in _COUNTS:
        return None if _is_int(value) else "an integer"
    if name in ("representation_size", "attn_pool_heads"):
        return None if value is None or _is_int(value) else "None or an integer"
    if name == "rope_ref_grid" and value is not None:
        pair = isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_int(v) for v in value)
        return None if _is_int(value) or pair else "None, an integer or a pair (height, width) of integers"
    if name in _NUMBERS:
        return None if _is_number(value) else "a finite number"
    if name in _OPTIONAL_NUMBERS:
        return None if value is None or _is_number(value) else "None or a finite number"
    if name in _BOOLS:
        return None if isinstance(value, bool) else "true or false"
    if name in _OPTIONAL_BOOLS:
        return None if value is None or isinstance(value, bool) else "None, true or false"
    if name in _STRINGS:
        return None if isinstance(value, str) else "a string"
    if name in _SIZES:
        pair = isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_int(v) for v in value)
        return None if _is_int(value) or pair else "an integer or a pair (height, width) of integers"
    return None


def check_fields(fields: dict[str, Any], what: str = "ViTConfig") -> None:
    """Raise a ConfigError naming the first of ``fields`` whose value has the wrong type (names are not checked)."""
    for name, value in fields.items():
        expected = _expected_type(name, value)
        if expected is not None:
            raise ConfigError(f"{what}.{name}={_short(value)} ({type(value).__name__}) is not allowed: expected "
                              f"{expected}.")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass
class ViTConfig:
    """The architecture of a Vision Transformer.

    Fields follow the classic reference implementation (``timm``'s ``VisionTransformer``) so a config
    can be read off any published ViT. ``fc_norm=None`` means "norm after pooling when pooling is avg".
    """

    img_size: int | tuple[int, int] = 224
    patch_size: int | tuple[int, int] = 16
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    qk_scale: float | None = None
    qk_norm: bool = False
    proj_bias: bool = True
    representation_size: int | None = None
    distilled: bool = False
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    head_drop_rate: float = 0.0
    norm_layer: str = "layernorm"
    norm_eps: float = 1e-6
    act_layer: str = "gelu"
    global_pool: str = "token"
    class_token: bool = True
    no_embed_class: bool = False
    reg_tokens: int = 0
    init_values: float | None = None
    pre_norm: bool = False
    patch_bias: bool | None = None
    fc_norm: bool | None = None
    final_norm: bool = True
    # 'sincos2d': no learned tensor; fixed sin-cos embeddings of the patch grid (big_vision), added to patches only
    posemb: str = "learn"
    # resampling of position embeddings to another grid (at load and for other input sizes); None: timm's
    posemb_resample: str | None = None
    # 2-D rotary position embeddings of the patch tokens' queries and keys (rope.py): 'eva' (EVA-02, Perception
    # Encoder) or 'dinov3'; computed for each input's grid
    rope: str = "none"
    rope_temperature: float = 10000.0
    rope_grid_offset: float = 0.0
    rope_grid_indexing: str = "ij"  # 'xy': the column coordinate first (Perception Encoder)
    rope_ref_grid: int | tuple[int, int] | None = None  # 'eva': positions rescaled onto this grid
    rope_rotate_half: bool = False  # rotate channel i with i + head_dim/2 (DINOv3), else neighbouring pairs
    qkv_fused: bool = True  # one qkv projection; False: q_proj, k_proj, v_proj (EVA-02-B/L)
    k_bias: bool = True  # False: with qkv_bias, q and v get biases and k none (EVA's attention)
    attn_norm: bool = False  # a norm of the attention output before its projection (EVA-CLIP)
    mlp_layer: str = "mlp"  # 'swiglu' (fc1_g, fc1_x) or 'swiglu_packed' (one fc1); width int(embed_dim * mlp_ratio)
    mlp_norm: bool = False  # a norm of the MLP's hidden activations (EVA-02)
    mlp_align: int = 0  # SwiGLU width rounded up to a multiple of this (DINOv3)
    mlp_bias: bool | None = None  # None: as proj_bias
    patch_norm: bool = False  # a norm right after the patch embedding (AIMv2)
    attn_pool_heads: int | None = None  # heads of the attention-pool head (None: num_heads)
    attn_pool_mlp_ratio: float | None = None  # MLP ratio of the attention-pool head (None: mlp_ratio)
    # image-text models: a bias-free projection of the pooled feature to this width (CLIP's image projection;
    # 0: none), and unit-length pooled features before the head (a zero-shot classifier's cosine similarities)
    embed_proj: int = 0
    normalize_features: bool = False

    def __post_init__(self) -> None:
        if self.global_pool == "":  # timm spells "no pooling" as ''
            self.global_pool = "none"
        check_fields({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        self.img_size = _pair(self.img_size)
        self.patch_size = _pair(self.patch_size)
        if self.rope_ref_grid is not None:
            self.rope_ref_grid = _pair(self.rope_ref_grid)
        self._validate()
        self._check_limits()

    # ------------------------------------------------------------------ validation
    def _fail(self, name: str, value: Any, expected: str) -> None:
        raise ConfigError(f"ViTConfig.{name}={value!r} is not allowed: expected {expected}.")

    def _choice(self, name: str, allowed: tuple[str, ...]) -> None:
        value = getattr(self, name)
        if value not in allowed:
            self._fail(name, value, f"one of {', '.join(allowed)}{did_you_mean(str(value), allowed)}")

    def _validate(self) -> None:
        for name in ("in_chans", "embed_dim", "depth", "num_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                self._fail(name, value, "a positive integer")
        for name in ("num_classes", "reg_tokens", "embed_proj"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                self._fail(name, value, "an integer >= 0")
        if min(self.patch_size) < 1:
            self._fail("patch_size", self.patch_size, "positive integers")
        for i, (img, patch) in enumerate(zip(self.img_size, self.patch_size)):
            if img < patch or img % patch:
                self._fail("img_size", self.img_size,
                           f"a multiple of patch_size {self.patch_size[i]} on each side "
                           f"(e.g. {nearest_multiple(img, patch)})")
        if self.embed_dim % self.num_heads:
            self._fail("num_heads", self.num_heads, f"a divisor of embed_dim={self.embed_dim}")
        if not self.mlp_ratio > 0 or int(self.embed_dim * min(self.mlp_ratio, LIMITS.max_mlp_ratio)) < 1:
            self._fail("mlp_ratio", self.mlp_ratio, "a number > 0 that gives an MLP at least 1 wide "
                                                    "(embed_dim * mlp_ratio >= 1)")
        for name in ("drop_rate", "attn_drop_rate", "drop_path_rate", "head_drop_rate"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                self._fail(name, value, "a probability in [0, 1)")
        if self.qk_scale is not None and not self.qk_scale > 0:
            self._fail("qk_scale", self.qk_scale, "None or a number > 0")
        if self.representation_size is not None and self.representation_size < 1:
            self._fail("representation_size", self.representation_size, "None or a positive integer")
        if not self.norm_eps > 0:
            self._fail("norm_eps", self.norm_eps, "a number > 0")
        self._choice("global_pool", GLOBAL_POOLS)
        self._choice("norm_layer", NORM_LAYERS)
        self._choice("act_layer", ACT_LAYERS)
        self._choice("posemb", POSEMBS)
        if self.posemb_resample is not None:
            self._choice("posemb_resample", POSEMB_RESAMPLES)
        self._validate_rope_mlp()
        if self.posemb == "sincos2d" and self.embed_dim % 4:
            self._fail("embed_dim", self.embed_dim, "a multiple of 4 with posemb='sincos2d' (four sin/cos quarters)")
        if self.global_pool == "token" and not self.class_token:
            self._fail("global_pool", self.global_pool,
                       "'avg', 'map' or 'none' when class_token=False (token pooling reads the class token)")
        if self.distilled:
            if not self.class_token:
                self._fail("distilled", True, "False when class_token=False (DeiT needs the class token)")
            if self.global_pool != "token":
                self._fail("global_pool", self.global_pool,
                           "'token' when distilled=True (the heads read the class and distillation tokens)")

    def _validate_rope_mlp(self) -> None:
        self._choice("rope", ROPES)
        self._choice("rope_grid_indexing", GRID_INDEXINGS)
        self._choice("mlp_layer", MLP_LAYERS)
        if self.rope != "none" and (self.embed_dim // self.num_heads) % 4:
            self._fail("rope", self.rope, f"'none' when the head width {self.embed_dim // self.num_heads} is not a "
                                          "multiple of 4 (2-D rotary embeddings rotate pairs along two axes)")
        if not self.rope_temperature > 0:
            self._fail("rope_temperature", self.rope_temperature, "a number > 0")
        if self.rope_ref_grid is not None and min(self.rope_ref_grid) < 1:
            self._fail("rope_ref_grid", self.rope_ref_grid, "None or positive integers")
        if self.mlp_align < 0:
            self._fail("mlp_align", self.mlp_align, "an integer >= 0")
        if self.mlp_align and self.mlp_layer != "swiglu":
            self._fail("mlp_align", self.mlp_align, "0 unless mlp_layer='swiglu' (only its width is aligned)")
        if self.attn_pool_heads is not None and (self.attn_pool_heads < 1 or self.embed_dim % self.attn_pool_heads):
            self._fail("attn_pool_heads", self.attn_pool_heads, f"None or a divisor of embed_dim={self.embed_dim}")
        if self.attn_pool_mlp_ratio is not None and not self.attn_pool_mlp_ratio > 0:
            self._fail("attn_pool_mlp_ratio", self.attn_pool_mlp_ratio, "None or a number > 0")

    def _check_limits(self) -> None:
        """Sizes against ``LIMITS`` (checked after the fields are valid, before any layer is built)."""
        hint = f"If you mean it, raise vitkit.config.LIMITS.{{}} (or set {CONFIG_LIMITS_ENV}=\"{{}}=...\")."
        bounds = [("depth", self.depth, "max_depth"), ("embed_dim", self.embed_dim, "max_embed_dim"),
                  ("num_heads", self.num_heads, "max_num_heads"), ("num_classes", self.num_classes, "max_num_classes"),
                  ("img_size", max(self.img_size), "max_img_size"), ("num_patches", self.num_patches, "max_tokens"),
                  ("in_chans", self.in_chans, "max_in_chans"), ("reg_tokens", self.reg_tokens, "max_reg_tokens"),
                  ("mlp_ratio", self.mlp_ratio, "max_mlp_ratio"),
                  ("representation_size", self.representation_size or 0, "max_embed_dim"),
                  ("embed_proj", self.embed_proj, "max_embed_dim"),
                  ("parameters (estimated)", None, "max_params")]  # estimated once the others are within bounds
        for name, value, limit in bounds:
            value = self.estimated_params() if value is None else value
            if value > getattr(LIMITS, limit):
                raise ConfigError(f"ViTConfig {name}={value:,} is more than the limit of {getattr(LIMITS, limit):,}, "
                                  f"a config too large to be meant. " + hint.format(limit, limit))

    def estimated_params(self) -> int:
        """The parameter count to within a few percent (no layer is built)."""
        d, hidden = self.embed_dim, int(self.embed_dim * self.mlp_ratio)
        block = 4 * d * d + (2 if self.mlp_layer == "mlp" else 3) * d * hidden
        tokens = self.num_patches + self.num_prefix_tokens
        head = (self.num_classes + (self.representation_size or 0) + self.embed_proj) * self.num_features
        return self.depth * block + d * self.in_chans * math.prod(self.patch_size) + tokens * d + head

    # ------------------------------------------------------------------ derived values
    @property
    def grid_size(self) -> tuple[int, int]:
        """Patches along (height, width) at the configured image size."""
        return (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patch tokens: class, distillation and register tokens."""
        return int(self.class_token) + int(self.distilled) + self.reg_tokens

    @property
    def use_fc_norm(self) -> bool:
        return self.global_pool == "avg" if self.fc_norm is None else self.fc_norm

    @property
    def num_features(self) -> int:
        """Width of the pooled feature the head reads (after the representation layer and projection, if any)."""
        return self.embed_proj or self.representation_size or self.embed_dim

    # ------------------------------------------------------------------ transformers' names (read-only)
    hidden_size = property(lambda self: self.embed_dim, doc="transformers' name of embed_dim.")
    num_hidden_layers = property(lambda self: self.depth, doc="transformers' name of depth.")
    num_attention_heads = property(lambda self: self.num_heads, doc="transformers' name of num_heads.")
    num_channels = property(lambda self: self.in_chans, doc="transformers' name of in_chans.")
    num_labels = property(lambda self: self.num_classes, doc="transformers' name of num_classes.")
    intermediate_size = property(lambda self: int(self.embed_dim * self.mlp_ratio),
                                 doc="transformers' name of the MLP width (embed_dim * mlp_ratio).")

    def __getattr__(self, name: str) -> Any:
        if name in ("id2label", "label2id"):
            raise AttributeError(f"ViTConfig has no {name}: it describes the architecture only. The class names "
                                 f"are model.pretrained_cfg.label_names (vitkit.labels.labels_for_model(model) "
                                 f"lists them by index).")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["img_size"] = list(self.img_size)
        data["patch_size"] = list(self.patch_size)
        if self.rope_ref_grid is not None:
            data["rope_ref_grid"] = list(self.rope_ref_grid)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ViTConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"A ViTConfig must be a dict of fields, got {type(data).__name__}.")
        data = dict(data)
        if data.get("extra") == {}:  # written (always empty) by vitkit 0.1.0 configs; never read
            del data["extra"]
        reject_unknown_fields(cls, data, "ViTConfig field(s)")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def replace(self, **changes: Any) -> ViTConfig:
        """A copy with some fields changed (validated again)."""
        reject_unknown_fields(type(self), changes, "ViTConfig field(s)")
        return dataclasses.replace(self, **changes)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class PretrainedCfg:
    """How the pretrained weights of a model expect their images, and where they come from."""

    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = HALF
    std: tuple[float, ...] = HALF
    crop_pct: float = 0.9
    # 'center': shorter side to size / crop_pct, centre crop; 'squash': both sides to size / crop_pct, centre crop
    crop_mode: str = "center"
    crop_rounding: str = "round"  # an odd crop margin: 'round' (torchvision, timm) or 'floor' (transformers)
    interpolation: str = "bicubic"
    num_classes: int = 1000
    label_names: str | tuple[str, ...] | None = "imagenet-1k"  # a built-in set's name, or the class names
    multi_label: bool = False  # independent sigmoid scores per class (predict thresholds them), not a softmax
    hf_hub_id: str | None = None
    timm_name: str | None = None
    tag: str | None = None  # timm's pretrained tag (e.g. 'augreg_in21k_ft_in1k'): weights at timm/<timm_name>.<tag>

    def __post_init__(self) -> None:
        problems = [(name, value, want) for name, value, want in self._checks() if want]
        if problems:
            name, value, want = problems[0]
            raise ConfigError(f"PretrainedCfg.{name}={_short(value)} is not allowed: expected {want}.")

    def _checks(self) -> list[tuple[str, Any, str | None]]:
        """(field, value, what was expected if the value is wrong) for every field."""
        size, mean, std = self.input_size, self.mean, self.std
        labels = self.label_names
        return [
            ("input_size", size, None if isinstance(size, tuple) and len(size) == 3 and all(
                _is_int(v) and 0 < v <= LIMITS.max_img_size for v in size) else
             f"(channels, height, width), positive integers up to {LIMITS.max_img_size}"),
            ("mean", mean, None if isinstance(mean, tuple) and 0 < len(mean) <= LIMITS.max_in_chans and all(
                map(_is_number, mean)) else "one finite number per channel"),
            ("std", std, None if isinstance(std, tuple) and 0 < len(std) <= LIMITS.max_in_chans and all(
                _is_number(v) and v > 0 for v in std) else "one number > 0 per channel"),
            ("crop_pct", self.crop_pct, None if _is_number(self.crop_pct) and 0 < self.crop_pct <= 1
             else "a fraction in (0, 1]"),
            ("crop_mode", self.crop_mode, None if self.crop_mode in ("center", "squash") else "'center' or 'squash'"),
            ("interpolation", self.interpolation, None if isinstance(self.interpolation, str) else "a string"),
            ("num_classes", self.num_classes, None if _is_int(self.num_classes) and self.num_classes >= 0
             else "an integer >= 0"),
            ("label_names", labels, None if labels is None or isinstance(labels, str) or (
                isinstance(labels, tuple) and all(isinstance(n, str) for n in labels)) else
             "None, a label set's name or a list of class names"),
            *((name, getattr(self, name), None if getattr(self, name) is None or isinstance(getattr(self, name), str)
               else "None or a string") for name in ("hf_hub_id", "timm_name")),
        ]

    def to_dict(self) -> dict[str, Any]:
        """The fields in declaration order, tuples as lists (JSON-ready)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @property
    def resize_size(self) -> tuple[int, int]:
        """(h, w) the image is resized to before the centre crop: ``floor(size / crop_pct)`` as timm computes it,
        except that a quotient within float error of an integer is that integer (224 / (224/235) gives 235)."""
        def scaled(size: int) -> int:
            exact = size / self.crop_pct
            return round(exact) if abs(exact - round(exact)) < 1e-6 else int(exact // 1)

        return scaled(self.input_size[1]), scaled(self.input_size[2])

    def replace(self, **changes: Any) -> PretrainedCfg:
        """A copy with some fields changed (lists normalised to tuples, as ``from_dict`` does)."""
        return PretrainedCfg.from_dict({**self.to_dict(), **changes})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PretrainedCfg:
        if not isinstance(data, dict):
            raise ConfigError(f"A pretrained config must be a dict of fields, got {type(data).__name__}.")
        data = dict(data)
        if isinstance(data.get("label_names"), list):
            data["label_names"] = tuple(data["label_names"])  # hashable, as the dataclass is frozen
        for key in ("input_size", "mean", "std"):
            if isinstance(data.get(key), list):  # anything else is reported by __post_init__
                data[key] = tuple(data[key])
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})
