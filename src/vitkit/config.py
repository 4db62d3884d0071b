"""ViTConfig: every hyperparameter of a Vision Transformer, validated when built."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from .checks import (
    any_int,
    boolean,
    check_types,
    check_values,
    checked,
    did_you_mean,
    did_you_mean_any,
    fraction,
    int_between,
    integer,
    is_int,
    is_number,
    limits_from_env,
    number,
    one_of,
    optional_as,
    positive,
    positive_int,
    probability,
    reject_unknown_fields,
    string,
)
from .errors import ConfigError

__all__ = ["ViTConfig", "PretrainedCfg", "SizeLimits", "LIMITS", "did_you_mean", "did_you_mean_any",
           "reject_unknown_fields", "limits_from_env", "check_fields", "nearest_multiple"]

# 'token_avg': the class token and the mean patch token side by side, 2 x embed_dim wide (the head of
# transformers' Dinov2ForImageClassification)
GLOBAL_POOLS = ("token", "avg", "map", "none", "token_avg")
NORM_LAYERS = ("layernorm", "rmsnorm")
ACT_LAYERS = ("gelu", "gelu_tanh", "quick_gelu", "relu", "silu")
# learned position embeddings, big_vision's fixed 2-D sin-cos ones, or none (rotary embeddings alone: DINOv3)
POSEMBS = ("learn", "sincos2d", "none")
ROPES = ("none", "eva", "dinov3")  # 2-D rotary embedding forms (rope.py)
GRID_INDEXINGS = ("ij", "xy")
MLP_LAYERS = ("mlp", "swiglu", "swiglu_packed")
# How position embeddings are resampled to another grid, named by the code whose numbers they give (posemb.py)
POSEMB_RESAMPLES = ("timm", "timm_npz", "hf", "google", "siglip2")


def nearest_multiple(value: int, step: int) -> int:
    """The positive multiple of ``step`` nearest to ``value`` (for "e.g. resize to ..." hints)."""
    return max(1, round(value / step)) * step


def _pair(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[1]))


# ---------------------------------------------------------------------- size limits
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

# ---------------------------------------------------------------------- field checks
def _size(v: Any) -> str | None:
    pair = isinstance(v, (list, tuple)) and len(v) == 2 and all(is_int(x) for x in v)
    return None if is_int(v) or pair else "an integer or a pair (height, width) of integers"


def _positive_pair(v: Any) -> str | None:
    return None if not isinstance(v, tuple) or min(v) >= 1 else "positive integers"


def _optional_bool(v: Any) -> str | None:
    return None if v is None or isinstance(v, bool) else "None, true or false"


_OPT_INT = optional_as(any_int)
_OPT_NUMBER = optional_as(number)
_OPT_STRING = optional_as(string)


def _field(default: Any, kind: Any, check: Any = None, help: str = "") -> Any:  # noqa: A002
    return checked(default, check, kind=kind, help=help)


def check_fields(fields: dict[str, Any], what: str = "ViTConfig") -> None:
    """Raise a ConfigError naming the first of ``fields`` whose value has the wrong type (names are not checked)."""
    check_types(ViTConfig, fields, what)


@dataclass
class ViTConfig:
    """The architecture of a Vision Transformer.

    Fields follow the classic reference implementation (``timm``'s ``VisionTransformer``) so a config
    can be read off any published ViT. ``fc_norm=None`` means "norm after pooling when pooling is avg".
    """

    img_size: int | tuple[int, int] = _field(224, _size, help="Input size, one side or (height, width).")
    patch_size: int | tuple[int, int] = _field(16, _size, _positive_pair, help="Patch size, one side or (h, w).")
    in_chans: int = _field(3, any_int, positive_int, help="Input channels.")
    num_classes: int = _field(1000, any_int, integer, help="Classes of the head (0: no head).")
    embed_dim: int = _field(768, any_int, positive_int, help="Token width.")
    depth: int = _field(12, any_int, positive_int, help="Transformer blocks.")
    num_heads: int = _field(12, any_int, positive_int, help="Attention heads.")
    mlp_ratio: float = _field(4.0, number, help="MLP width / embed_dim.")
    qkv_bias: bool = _field(True, boolean)
    qk_scale: float | None = _field(None, _OPT_NUMBER, optional_as(positive), help="Attention scale (None: d^-0.5).")
    qk_norm: bool = _field(False, boolean)
    proj_bias: bool = _field(True, boolean)
    representation_size: int | None = _field(None, _OPT_INT, optional_as(positive_int))
    distilled: bool = _field(False, boolean, help="DeiT distillation token and head.")
    drop_rate: float = _field(0.0, number, probability)
    attn_drop_rate: float = _field(0.0, number, probability)
    drop_path_rate: float = _field(0.0, number, probability)
    head_drop_rate: float = _field(0.0, number, probability)
    norm_layer: str = _field("layernorm", string, one_of(NORM_LAYERS))
    norm_eps: float = _field(1e-6, number, positive)
    act_layer: str = _field("gelu", string, one_of(ACT_LAYERS))
    global_pool: str = _field("token", string, one_of(GLOBAL_POOLS))
    class_token: bool = _field(True, boolean)
    no_embed_class: bool = _field(False, boolean)
    reg_tokens: int = _field(0, any_int, integer, help="Register tokens.")
    init_values: float | None = _field(None, _OPT_NUMBER, help="LayerScale init (None: no LayerScale).")
    pre_norm: bool = _field(False, boolean)
    patch_bias: bool | None = _field(None, _optional_bool)
    fc_norm: bool | None = _field(None, _optional_bool)
    final_norm: bool = _field(True, boolean)
    # 'sincos2d': no learned tensor; fixed sin-cos embeddings of the patch grid (big_vision), added to patches only
    posemb: str = _field("learn", string, one_of(POSEMBS))
    # resampling of position embeddings to another grid (at load and for other input sizes); None: timm's
    posemb_resample: str | None = _field(None, _OPT_STRING, optional_as(one_of(POSEMB_RESAMPLES)))
    # 2-D rotary position embeddings of the patch tokens' queries and keys (rope.py): 'eva' (EVA-02, Perception
    # Encoder) or 'dinov3'; computed for each input's grid
    rope: str = _field("none", string, one_of(ROPES), help="Rotary embedding form: none, eva or dinov3.")
    rope_temperature: float = _field(10000.0, number, positive)
    rope_grid_offset: float = _field(0.0, number)
    rope_grid_indexing: str = _field("ij", string, one_of(GRID_INDEXINGS),
                                     help="'xy': the column coordinate first (Perception Encoder).")
    rope_ref_grid: int | tuple[int, int] | None = _field(None, optional_as(_size), optional_as(_positive_pair),
                                                         help="'eva': positions rescaled onto this grid.")
    rope_rotate_half: bool = _field(False, boolean, help="Rotate channel i with i + head_dim/2 (DINOv3).")
    qkv_fused: bool = _field(True, boolean, help="One qkv projection; False: q_proj, k_proj, v_proj.")
    k_bias: bool = _field(True, boolean, help="False: with qkv_bias, q and v get biases and k none (EVA).")
    attn_norm: bool = _field(False, boolean, help="A norm of the attention output before its projection.")
    mlp_layer: str = _field("mlp", string, one_of(MLP_LAYERS), help="mlp, swiglu or swiglu_packed.")
    mlp_norm: bool = _field(False, boolean, help="A norm of the MLP's hidden activations (EVA-02).")
    mlp_align: int = _field(0, any_int, integer, help="SwiGLU width rounded up to a multiple of this (DINOv3).")
    mlp_bias: bool | None = _field(None, _optional_bool, help="None: as proj_bias.")
    patch_norm: bool = _field(False, boolean, help="A norm right after the patch embedding (AIMv2).")
    attn_pool_heads: int | None = _field(None, _OPT_INT, optional_as(positive_int),
                                         help="Heads of the attention-pool head (None: num_heads).")
    attn_pool_mlp_ratio: float | None = _field(None, _OPT_NUMBER, optional_as(positive),
                                               help="MLP ratio of the attention-pool head (None: mlp_ratio).")
    # image-text models: a bias-free projection of the pooled feature to this width (CLIP's image projection;
    # 0: none), and unit-length pooled features before the head (a zero-shot classifier's cosine similarities)
    embed_proj: int = _field(0, any_int, integer, help="Width of the image projection (0: none).")
    normalize_features: bool = _field(False, boolean, help="Unit-length pooled features before the head.")

    def __post_init__(self) -> None:
        if self.global_pool == "":  # timm spells "no pooling" as ''
            self.global_pool = "none"
        check_fields({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        self.img_size = _pair(self.img_size)
        self.patch_size = _pair(self.patch_size)
        if self.rope_ref_grid is not None:
            self.rope_ref_grid = _pair(self.rope_ref_grid)
        check_values(self, "ViTConfig")
        self._validate()
        self._check_limits()

    # ------------------------------------------------------------------ validation
    def _fail(self, name: str, value: Any, expected: str) -> None:
        raise ConfigError(f"ViTConfig.{name}={value!r} is not allowed: expected {expected}.")

    def _validate(self) -> None:
        """The rules that join fields (each field's own rule is its check)."""
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
        if self.rope != "none" and (self.embed_dim // self.num_heads) % 4:
            self._fail("rope", self.rope, f"'none' when the head width {self.embed_dim // self.num_heads} is not a "
                                          "multiple of 4 (2-D rotary embeddings rotate pairs along two axes)")
        if self.mlp_align and self.mlp_layer != "swiglu":
            self._fail("mlp_align", self.mlp_align, "0 unless mlp_layer='swiglu' (only its width is aligned)")
        if self.attn_pool_heads is not None and self.embed_dim % self.attn_pool_heads:
            self._fail("attn_pool_heads", self.attn_pool_heads, f"None or a divisor of embed_dim={self.embed_dim}")
        if self.posemb == "sincos2d" and self.embed_dim % 4:
            self._fail("embed_dim", self.embed_dim, "a multiple of 4 with posemb='sincos2d' (four sin/cos quarters)")
        if self.global_pool == "token_avg" and (self.representation_size or self.embed_proj or self.fc_norm):
            self._fail("global_pool", self.global_pool, "another pooling with a pre-logits layer, an image projection "
                       "or an fc-norm (they take one token's width; 'token_avg' gives two side by side)")
        if self.global_pool in ("token", "token_avg") and not self.class_token:
            self._fail("global_pool", self.global_pool,
                       "'avg', 'map' or 'none' when class_token=False (token pooling reads the class token)")
        if self.distilled:
            if not self.class_token:
                self._fail("distilled", True, "False when class_token=False (DeiT needs the class token)")
            if self.global_pool != "token":
                self._fail("global_pool", self.global_pool,
                           "'token' when distilled=True (the heads read the class and distillation tokens)")

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
    def resample_style(self) -> str:
        """The position-embedding resampling the model runs with: ``posemb_resample``, timm's when not set."""
        return self.posemb_resample or "timm"

    @property
    def mlp_hidden(self) -> int:
        """The MLP's hidden width as built: ``int(embed_dim * mlp_ratio)``, rounded up to ``mlp_align`` (SwiGLU)."""
        hidden = int(self.embed_dim * self.mlp_ratio)
        return hidden + (-hidden % self.mlp_align if self.mlp_align else 0)

    @property
    def mlp_has_bias(self) -> bool:
        return self.proj_bias if self.mlp_bias is None else self.mlp_bias

    @property
    def uses_act_layer(self) -> bool:
        """Whether ``act_layer`` acts: a SwiGLU gates with SiLU, so only a plain MLP or a MAP head's MLP uses it."""
        return self.mlp_layer == "mlp" or self.global_pool == "map"

    @property
    def use_fc_norm(self) -> bool:
        return self.global_pool == "avg" if self.fc_norm is None else self.fc_norm

    @property
    def num_features(self) -> int:
        """Width of the pooled feature the head reads (after the representation layer and projection, if any)."""
        return self.embed_proj or self.representation_size or self.embed_dim * (2 if self.global_pool == "token_avg"
                                                                                 else 1)

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


def _input_size(v: Any) -> str | None:
    ok = isinstance(v, tuple) and len(v) == 3 and all(is_int(x) and 0 < x <= LIMITS.max_img_size for x in v)
    return None if ok else f"(channels, height, width), positive integers up to {LIMITS.max_img_size}"


def _mean(v: Any) -> str | None:
    ok = isinstance(v, tuple) and 0 < len(v) <= LIMITS.max_in_chans and all(map(is_number, v))
    return None if ok else "one finite number per channel"


def _std(v: Any) -> str | None:
    ok = isinstance(v, tuple) and 0 < len(v) <= LIMITS.max_in_chans and all(is_number(x) and x > 0 for x in v)
    return None if ok else "one number > 0 per channel"


def _crop_mode(v: Any) -> str | None:
    return None if v in ("center", "squash") else "'center' or 'squash'"


def _label_names(v: Any) -> str | None:
    ok = v is None or isinstance(v, str) or (isinstance(v, tuple) and all(isinstance(n, str) for n in v))
    return None if ok else "None, a label set's name or a list of class names"


@dataclass(frozen=True)
class PretrainedCfg:
    """How the pretrained weights of a model expect their images, and where they come from."""

    input_size: tuple[int, int, int] = checked((3, 224, 224), _input_size, help="(channels, height, width).")
    mean: tuple[float, ...] = checked(HALF, _mean, help="Per-channel mean subtracted from pixels in [0, 1].")
    std: tuple[float, ...] = checked(HALF, _std, help="Per-channel standard deviation.")
    crop_pct: float = checked(0.9, fraction, help="Crop size / resize size.")
    # 'center': shorter side to size / crop_pct, centre crop; 'squash': both sides to size / crop_pct, centre crop
    crop_mode: str = checked("center", _crop_mode)
    crop_rounding: str = "round"  # an odd crop margin: 'round' (torchvision, timm) or 'floor' (transformers)
    interpolation: str = checked("bicubic", string)
    num_classes: int = checked(1000, integer)
    label_names: str | tuple[str, ...] | None = checked("imagenet-1k", _label_names,  # a set's name, or the names
                                                        help="A built-in label set's name, or the class names.")
    multi_label: bool = False  # independent sigmoid scores per class (predict thresholds them), not a softmax
    hf_hub_id: str | None = checked(None, _OPT_STRING)
    timm_name: str | None = checked(None, _OPT_STRING)
    # native-aspect (NaFlex) models: the patch budget per image (vitkit.patches)
    max_num_patches: int | None = checked(None, optional_as(int_between(1, LIMITS.max_tokens)))
    tag: str | None = None  # timm's pretrained tag (e.g. 'augreg_in21k_ft_in1k'): weights at timm/<timm_name>.<tag>

    def __post_init__(self) -> None:
        check_values(self, "PretrainedCfg")

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
