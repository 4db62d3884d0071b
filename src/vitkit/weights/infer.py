"""A checkpoint's config, resolved in one place: the architecture it states or its tensor shapes imply (under
vitkit names, with the registry's ``known`` architectures filling what a file does not say), and the
preprocessing it states (``pretrained_cfg_for``)."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from ..config import PretrainedCfg, ViTConfig
from ..errors import CheckpointError, ConfigError, CorruptCheckpointError, Hint

if TYPE_CHECKING:
    from .formats import Converted

logger = logging.getLogger(__name__)

# What the command line says where the library says "pass X= to from_pretrained": the CLI has no flag for the
# architecture fields, so the fix is a one-off load in Python, saved as a vitkit folder that records them.
_RESAVE = " and save it with vitkit.save_pretrained(model, OUT), which records it; then use OUT."
BY_NAME = Hint(", or build the model by name: create_model(name, pretrained=FILE)",
               cli=", or build the model by name: --model NAME --weights FILE")
HEADS = Hint(" Pass num_heads=... to from_pretrained.",
             cli=" Load it in Python with vitkit.from_pretrained(FILE, num_heads=...)" + _RESAVE)
SINCOS = Hint(" Load it with posemb='sincos2d' and its img_size, e.g. from_pretrained(FILE, posemb='sincos2d', "
              "img_size=224).",
              cli=" Load it in Python with vitkit.from_pretrained(FILE, posemb='sincos2d', img_size=224)" + _RESAVE)
SINCOS_SIZE = Hint(" Pass img_size=..., e.g. img_size=224.", option="img_size", cli=" Pass {flag} N, e.g. {flag} 224.",
                   cli_without=" Load it in Python with vitkit.from_pretrained(FILE, img_size=224)" + _RESAVE)
GRID_SIZE = Hint(" Pass img_size=(H, W) of the checkpoint.",
                 cli=" Load it in Python with vitkit.from_pretrained(FILE, img_size=(H, W))" + _RESAVE)

# Heads of published widths beyond the registry's (g, DINOv2-g, G); other unknown widths: 64-dim heads
HEADS_BY_WIDTH = {1408: 16, 1536: 24, 1664: 16}
# The fields a checkpoint's tensors decide (a named architecture's hints leave them to the shapes)
SHAPED_FIELDS = ("patch_size", "in_chans", "embed_dim", "depth", "mlp_ratio", "num_classes", "representation_size",
                 "class_token", "reg_tokens", "distilled", "no_embed_class")
# Fields tensor shapes cannot tell: a family's config files (hints) or the caller (overrides) must
NON_INFERABLE = ("num_heads", "norm_eps", "act_layer", "qk_scale", "no_embed_class", "global_pool", "fc_norm")
# The fields that make an architecture, in the order an inventory lists them
ARCH_FIELDS = ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads", "mlp_ratio", "num_classes",
               "global_pool", "class_token", "distilled", "reg_tokens", "representation_size", "no_embed_class")
_BLOCK = re.compile(r"blocks\.(\d+)\.")

Shapes = Mapping[str, tuple[int, ...]]
#: Known architectures by name (the registry's, passed down by the floors above: weights never import it)
Known = Mapping[str, ViTConfig]


def _shape(shapes: Shapes, key: str, what: str) -> tuple[int, ...]:
    if key not in shapes:
        raise CheckpointError(f"The checkpoint has no {key!r}, so its {what} cannot be inferred: it is not a ViT "
                              "checkpoint, or it names its tensors in a way vitkit does not map. List its tensors "
                              f"with `vitkit weights FILE`{BY_NAME.text}.", hints=(BY_NAME,))
    return shapes[key]


def _square_side(n: int) -> int | None:
    side = math.isqrt(max(n, 0))
    return side if side * side == n and side > 0 else None


def heads_for_width(dim: int, known: Known | None = None) -> int:
    """The usual head count of a width: a known model's, a published one's, else 64-dim heads."""
    widths = {**HEADS_BY_WIDTH, **{c.embed_dim: c.num_heads for c in (known or {}).values()}}
    if dim in widths:
        return widths[dim]
    if dim % 64 == 0:
        return dim // 64
    raise CheckpointError(f"Cannot guess the number of attention heads of a width-{dim} model (tensor shapes do "
                          f"not store it).{HEADS.text}", hints=(HEADS,))


def _mlp_ratio(hidden: int, dim: int) -> float:
    ratio = hidden / dim
    return ratio if int(dim * ratio) == hidden else (hidden + 0.5) / dim  # int() must give back `hidden`


def _pooling(shapes: Shapes, class_token: bool) -> dict[str, Any]:
    if "attn_pool.latent" in shapes:
        return {"global_pool": "map"}
    if "fc_norm.weight" in shapes:
        return {"global_pool": "avg", "fc_norm": True}
    if class_token:
        return {"global_pool": "token"}
    return {"global_pool": "avg", "fc_norm": False}  # norm then mean over patches (big_vision 'gap')


def _sincos_grid(shapes: Shapes, hints: Mapping[str, Any], patch: tuple[int, int]) -> tuple[bool, tuple[int, int]]:
    """(no_embed_class, patch grid) of a checkpoint without a position tensor: fixed sin-cos embeddings
    (big_vision's posemb='sincos2d') of the grid the stated image size gives, or rotary embeddings alone
    (posemb='none', DINOv3: the grid of the image size its family states)."""
    if hints.get("posemb") == "none" and "img_size" in hints:
        h, w = (hints["img_size"],) * 2 if isinstance(hints["img_size"], int) else hints["img_size"]
        return False, (int(h) // patch[0], int(w) // patch[1])
    if hints.get("posemb") != "sincos2d":
        raise CheckpointError("The checkpoint has patch and block tensors but no position embedding tensor "
                              "(pos_embed, or Google's pos_embedding): it was probably trained with fixed sin-cos "
                              f"position embeddings (big_vision's posemb='sincos2d').{SINCOS.text}", hints=(SINCOS,))
    if "img_size" not in hints:
        raise CheckpointError("A posemb='sincos2d' checkpoint does not store its image size (it has no position "
                              f"tensor to read it from).{SINCOS_SIZE.text}", hints=(SINCOS_SIZE,))
    h, w = (hints["img_size"],) * 2 if isinstance(hints["img_size"], int) else hints["img_size"]
    return True, (int(h) // patch[0], int(w) // patch[1])


def _grid(shapes: Shapes, prefix: int, hints: Mapping[str, Any]) -> tuple[bool, tuple[int, int]]:
    """(no_embed_class, patch grid) from the position embedding's length."""
    tokens = _shape(shapes, "pos_embed", "image size")[1]
    if "no_embed_class" in hints:
        no_embed = bool(hints["no_embed_class"])
    else:  # a length that is a square grid plus the prefix tokens includes them; a square alone does not
        no_embed = prefix > 0 and _square_side(tokens - prefix) is None and _square_side(tokens) is not None
    side = _square_side(tokens - (0 if no_embed else prefix))
    if side is None:
        raise CheckpointError(f"The position embedding has {tokens} tokens ({prefix} prefix), which is not a square "
                              f"grid; the image size cannot be inferred.{GRID_SIZE.text}", hints=(GRID_SIZE,))
    return no_embed, (side, side)


def infer_fields(shapes: Shapes, hints: Mapping[str, Any] | None = None, known: Known | None = None) -> dict[str, Any]:
    """ViTConfig fields from tensor shapes; ``hints`` (from config files) fill what shapes cannot tell, and
    ``known`` architectures give the usual head count of a width."""
    hints = dict(hints or {})
    kernel = _shape(shapes, "patch_embed.proj.weight", "width and patch size")
    if len(kernel) != 4:
        raise CheckpointError(f"The checkpoint's patch embedding (patch_embed.proj.weight) has shape {kernel}, "
                              "expected a convolution kernel (width, channels, patch height, patch width): a "
                              "linear patch embedding over flattened patches under this name is not a layout vitkit "
                              "reads (SigLIP 2 NaFlex folders and timm NaFlexVit files load). Use the checkpoint as "
                              "its library saved it.")
    dim, in_chans, ph, pw = kernel
    blocks = {int(m.group(1)) for k in shapes if (m := _BLOCK.match(k))}
    swiglu = "blocks.0.mlp.fc1_g.weight" in shapes  # SwiGLU: its gated width
    hidden = _shape(shapes, "blocks.0.mlp.fc1_g.weight" if swiglu else "blocks.0.mlp.fc1.weight", "MLP width")[0]
    class_token = "cls_token" in shapes
    reg_tokens = shapes["reg_token"][1] if "reg_token" in shapes else 0
    prefix = int(class_token) + int("dist_token" in shapes) + reg_tokens
    if "pos_embed" in shapes:
        no_embed_class, grid = _grid(shapes, prefix, hints)
    else:
        no_embed_class, grid = _sincos_grid(shapes, hints, (ph, pw))
    fields: dict[str, Any] = dict(
        img_size=(grid[0] * ph, grid[1] * pw), patch_size=(ph, pw), in_chans=in_chans, embed_dim=dim,
        depth=max(blocks) + 1, mlp_ratio=_mlp_ratio(hidden, dim), class_token=class_token,
        distilled="dist_token" in shapes, reg_tokens=reg_tokens, no_embed_class=no_embed_class,
        num_classes=shapes["head.weight"][0] if "head.weight" in shapes else 0,
        representation_size=shapes["pre_logits.fc.weight"][0] if "pre_logits.fc.weight" in shapes else None,
        qkv_bias="blocks.0.attn.qkv.bias" in shapes, qk_norm="blocks.0.attn.q_norm.weight" in shapes,
        proj_bias="blocks.0.attn.proj.bias" in shapes, patch_bias="patch_embed.proj.bias" in shapes,
        init_values=1e-5 if "blocks.0.ls1.gamma" in shapes else None,  # the value is loaded, not used
        pre_norm="norm_pre.weight" in shapes, final_norm="norm.weight" in shapes or "fc_norm.weight" in shapes,
        patch_norm="patch_embed.norm.weight" in shapes,
        norm_layer="layernorm" if "blocks.0.norm1.bias" in shapes else "rmsnorm",
        **_pooling(shapes, class_token), **({"mlp_layer": "swiglu"} if swiglu else {}))
    if ("blocks.0.mlp.fc2.bias" in shapes) != fields["proj_bias"]:  # MLP biases unlike the attention's
        fields["mlp_bias"] = "blocks.0.mlp.fc2.bias" in shapes
    if hints.get("mlp_layer") == "swiglu_packed":  # one fc1 holds the gate and the value: half is the width
        fields["mlp_ratio"] = _mlp_ratio(hidden // 2, dim)
    if "blocks.0.mlp.norm.weight" in shapes:
        fields["mlp_norm"] = True
    if "num_heads" not in hints:
        fields["num_heads"] = heads_for_width(dim, known)
        logger.info("num_heads not stored in the checkpoint; assuming %d (%d-dim heads)",
                    fields["num_heads"], dim // fields["num_heads"])
    fields.update(hints)
    return fields


def infer_config(state: Mapping[str, torch.Tensor], hints: Mapping[str, Any] | None = None,
                 known: Known | None = None, **overrides: Any) -> ViTConfig:
    """The ViTConfig of a state dict under vitkit names, with ``hints`` then ``overrides`` applied."""
    # the position embedding's kind and the image size decide the grid of a file without a position tensor
    stated = {k: overrides[k] for k in ("posemb", "img_size") if k in overrides}
    fields = infer_fields({k: tuple(v.shape) for k, v in state.items()}, {**(hints or {}), **stated}, known)
    fields.update(overrides)
    return ViTConfig(**fields)


def config_from(converted: Converted, known: Known | None = None, **overrides: Any) -> ViTConfig:
    """The ViTConfig of a converted checkpoint: the one it states (vitkit's format), else one inferred from its
    tensor shapes and hints (a known architecture it names fills what its files do not state); ``overrides``
    applied."""
    if converted.exact:
        config = ViTConfig.from_dict(converted.hints)
        return config.replace(**overrides) if overrides else config
    hints = {**known_hints(converted.architecture, known), **converted.hints}
    return infer_config(converted.state, hints, known, **overrides)


def known_hints(name: str | None, known: Known | None) -> dict[str, Any]:
    """The fields shapes cannot tell, from a known model of that name (a timm tag after '.' ignored;
    ``{}`` if unknown)."""
    config = (known or {}).get(str(name or "").split(".")[0])
    if config is None:
        return {}
    hints = {k: getattr(config, k) for k in NON_INFERABLE}
    if config.rope != "none" or config.posemb != "learn":
        # rotary or fixed positions (timm's Eva family): the architecture's own fields, but those the tensors
        # decide (widths, depth, heads' count of classes, tokens; the image size where a position tensor says it)
        shaped = {*SHAPED_FIELDS, *(() if config.posemb != "learn" else ("img_size",))}
        hints.update({k: v for k, v in config.to_dict().items() if k not in shaped})
    return hints


# mlp_ratio is compared as the hidden width it gives, so ratios rounded differently still match
_MATCH_FIELDS = tuple(f for f in ARCH_FIELDS if f != "mlp_ratio")


def block_form(config: ViTConfig) -> dict[str, Any]:
    """The form of a config's positions, norms, attention and MLP that tensor shapes show, as the fields that
    differ from a plain ViT's (rotary and absolute positions, pre-norm, patch norm, RMSNorm, layer scale, biases,
    the MLP kind); eps, activations and rotary bases are numerics, not form."""
    form, plain = _form(config), _PLAIN_FORM
    return {k: v for k, v in form.items() if v != plain[k]}


def _form(c: ViTConfig) -> dict[str, Any]:
    return {"posemb": c.posemb, "rope": c.rope, "pre_norm": c.pre_norm, "patch_norm": c.patch_norm,
            "norm_layer": c.norm_layer, "layer_scale": bool(c.init_values), "qkv_bias": c.qkv_bias,
            "k_bias": c.k_bias or not c.qkv_bias, "proj_bias": c.proj_bias, "mlp_layer": c.mlp_layer,
            "mlp_norm": c.mlp_norm, "qk_norm": c.qk_norm, "final_norm": c.final_norm}


_PLAIN_FORM = _form(ViTConfig())


def match_known(config: ViTConfig, known: Known | None) -> str | None:
    """The known model with the same architecture as ``config`` (its shapes and block form; norm eps,
    activations and rotary bases aside)."""
    def key(c: ViTConfig) -> tuple[Any, ...]:
        return (*(getattr(c, f) for f in _MATCH_FIELDS), c.mlp_hidden, tuple(sorted(block_form(c).items())))

    want = key(config)
    return next((n for n, c in sorted((known or {}).items()) if key(c) == want), None)


# ---------------------------------------------------------------------- a checkpoint's config, resolved
NEW_HEAD = Hint(", or pass num_classes= for a new head", option="num_classes", cli=", or pass {flag} N for a new head")


def pretrained_cfg_for(converted: Converted, config: ViTConfig, source: str = "the checkpoint") -> PretrainedCfg:
    """The preprocessing a converted checkpoint states, at the input size of ``config``."""
    stated = converted.pretrained_cfg or {}
    if not isinstance(stated, dict):
        raise CorruptCheckpointError(f"{source}: its pretrained_cfg is a {type(stated).__name__}, expected an object "
                                     "of preprocessing fields. Fix the file or re-save the model.")
    base = dict(stated)
    base.update(input_size=(config.in_chans, *config.img_size), num_classes=config.num_classes)
    base.setdefault("label_names", None)
    if isinstance(base["label_names"], (list, tuple)) and len(base["label_names"]) != config.num_classes:
        base["label_names"] = None  # the names describe the head the file was saved with, not a new one
    try:
        return PretrainedCfg.from_dict(base)
    except ConfigError as exc:
        raise CorruptCheckpointError(f"{source}: the preprocessing it states is not valid: {exc} Fix the file or "
                                     "re-save the model.") from None


def stated_config(converted: Converted, known: Known | None, source: str, **overrides: Any) -> ViTConfig:
    """The architecture of a checkpoint (``config_from``), a file's bad config blamed on the file. A stated
    (vitkit) config must agree with the head the file holds: a disagreement is corruption, not a new head."""
    try:
        config = config_from(converted, known, **overrides)
    except ConfigError as exc:
        raise CorruptCheckpointError(f"{source}: the architecture it states or implies is not valid: {exc} Fix "
                                     "the file's config or re-save the model.", hints=exc.hints) from None
    head = converted.state.get("head.weight")
    if converted.exact and "num_classes" not in overrides and head is not None and head.ndim == 2 \
            and head.shape[0] != config.num_classes:
        raise CorruptCheckpointError(f"{source}: its config states num_classes={config.num_classes} but head.weight "
                                     f"has {head.shape[0]} rows. Fix the config{NEW_HEAD.text}.", hints=(NEW_HEAD,))
    return config
