"""open_clip image towers: the visual half of an open_clip CLIP folder as a vitkit image model.

An open_clip hub folder holds ``open_clip_config.json`` (``model_cfg``: the towers' sizes; ``preprocess_cfg``:
the image preprocessing) beside ``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin``. Loaded as a
checkpoint (``vitkit.from_pretrained(folder)``), the image tower becomes an ordinary ``VisionTransformer``
(a LayerNorm before the blocks, class-token pooling with the final norm, the projection to the shared embedding
as ``embed_proj``; QuickGELU for OpenAI's weights) and the text tower is dropped, as the load report says;
``vitkit.load_image_text(folder)`` reads both towers. open_clip resamples position embeddings as timm does
(bicubic with antialiasing).
"""

from __future__ import annotations

from typing import Any

from ..errors import CheckpointError
from .formats import Family
from .mapping import Rule, params
from .numerics import FamilyNumerics
from .readers import Checkpoint

CONFIG = "open_clip_config.json"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip's PreprocessCfg defaults
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# open_clip's eval transform: resize the shorter side and centre-crop, or squash; 'longest' pads (no equivalent)
RESIZE_MODES = {"shortest": "center", "squash": "squash"}


def _block_rules() -> list[Rule]:
    block = "visual.transformer.resblocks.{}."
    return [
        *params(block + "ln_1", "blocks.{}.norm1"),
        *params(block + "attn", "blocks.{}.attn.qkv", src_names=("in_proj_weight", "in_proj_bias")),
        *params(block + "attn.out_proj", "blocks.{}.attn.proj"),
        *params(block + "ln_2", "blocks.{}.norm2"),
        *params(block + "mlp.c_fc", "blocks.{}.mlp.fc1"),
        *params(block + "mlp.c_proj", "blocks.{}.mlp.fc2"),
    ]


RULES: tuple[Rule, ...] = (
    ("visual.class_embedding", "cls_token", "token"),  # (D,) -> (1, 1, D)
    ("visual.positional_embedding", "pos_embed", "batch"),  # (L, D) -> (1, L, D)
    ("visual.conv1.weight", "patch_embed.proj.weight", "id"),
    *params("visual.ln_pre", "norm_pre"),
    *_block_rules(),
    *params("visual.ln_post", "norm"),
    ("visual.proj", "embed_proj.weight", "T"),  # (width, embed) -> Linear (embed, width)
    # the text tower and the two towers' scale and bias: kept by load_image_text, not by an image model
    ("token_embedding.weight", None, "id"), ("positional_embedding", None, "id"), ("text_projection", None, "id"),
    ("ln_final.*", None, "id"), ("transformer.*", None, "id"), ("logit_scale", None, "id"),
    ("logit_bias", None, "id"), ("attn_mask", None, "id"),
)


def _model_cfg(ckpt: Checkpoint) -> dict[str, Any] | None:
    cfg = (ckpt.extra.get(CONFIG) or {}).get("model_cfg")
    return cfg if isinstance(cfg, dict) else None


def _hints(ckpt: Checkpoint, tensors: Any) -> dict[str, Any]:
    """The image tower's architecture from ``model_cfg`` (an open_clip state dict alone states none)."""
    from .text import open_clip_configs  # the same reading of model_cfg as the two-tower model's

    cfg = _model_cfg(ckpt)
    if cfg is None or "embed_dim" not in cfg:
        return {}
    vision, _ = open_clip_configs(cfg, str(ckpt.path))
    fields = ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "num_classes", "pre_norm",
              "act_layer", "norm_eps", "embed_proj")
    return {k: getattr(vision, k) for k in fields}


def _pretrained_cfg(ckpt: Checkpoint) -> dict[str, Any] | None:
    """open_clip's eval preprocessing as a PretrainedCfg: its mean, std and interpolation, the tower's size, the
    shorter side resized to it and centre-cropped (or squashed)."""
    cfg = _model_cfg(ckpt)
    if cfg is None:
        return None
    pre = (ckpt.extra.get(CONFIG) or {}).get("preprocess_cfg") or {}
    if not isinstance(pre, dict):
        raise CheckpointError(f"{ckpt.path / CONFIG}: preprocess_cfg is a {type(pre).__name__}, expected an object.")
    mode = pre.get("resize_mode", "shortest")
    if mode not in RESIZE_MODES:
        raise CheckpointError(f"{ckpt.path / CONFIG}: resize_mode={mode!r} (open_clip pads the longer side) has no "
                              f"vitkit equivalent: expected one of {', '.join(RESIZE_MODES)}. Pass explicit "
                              "settings to ImageProcessor instead.")
    size = (cfg.get("vision_cfg") or {}).get("image_size", 224)
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return {"input_size": (3, h, w), "mean": tuple(pre.get("mean", OPENAI_MEAN)),
            "std": tuple(pre.get("std", OPENAI_STD)), "interpolation": pre.get("interpolation", "bicubic"),
            "crop_pct": 1.0, "crop_mode": RESIZE_MODES[mode], "crop_rounding": "round", "label_names": None,
            "num_classes": 0}


FAMILY = Family(
    name="open_clip",
    description="open_clip CLIP folders (open_clip_config.json + open_clip_model.safetensors): the image tower",
    signatures=(r"^visual\.conv1\.weight$",),
    rules=RULES,
    numerics=FamilyNumerics("open_clip", "timm"),
    hints=_hints,
    pretrained_cfg=_pretrained_cfg,
    marker=lambda ckpt: CONFIG in ckpt.extra,
)
