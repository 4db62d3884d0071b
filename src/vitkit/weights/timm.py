"""timm checkpoints: vitkit's names are timm's, so the table only renames a few legacy keys.

A timm folder from the Hub has ``config.json`` with ``architecture``, ``pretrained_cfg`` and sometimes
``model_args``; those fill what tensor shapes cannot tell (heads, activation).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..config import ACT_LAYERS
from ..errors import CheckpointError
from .formats import Family
from .infer import NON_INFERABLE
from .numerics import TIMM
from .readers import Checkpoint, tensor_info
from .writers import write_json, write_safetensors

if TYPE_CHECKING:
    from ..model import VisionTransformer

RULES = (
    ("blocks.{}.gamma_1", "blocks.{}.ls1.gamma", "id"),  # DeiT-III / CaiT-style layer scale, old naming
    ("blocks.{}.gamma_2", "blocks.{}.ls2.gamma", "id"),
    ("mask_token", None, "id"),  # masked-image-modelling token, unused for inference
    # NaFlexVit's embedding module: a linear layer over flattened patches, positions as an (H, W) grid
    ("embeds.proj.weight", "patch_embed.proj.weight", "patch"),
    ("embeds.proj.bias", "patch_embed.proj.bias", "id"),
    ("embeds.pos_embed", "pos_embed", "grid"),
    ("embeds.cls_token", "cls_token", "id"),
    ("embeds.reg_token", "reg_token", "id"),
    ("embeds.norm.weight", "patch_embed.norm.weight", "id"),
    ("embeds.norm.bias", "patch_embed.norm.bias", "id"),
)
NAFLEX_POSITIONS = "embeds.pos_embed"
_EVA_LAYER_SCALE = re.compile(r"^(blocks\.\d+\.)ls([12])\.gamma$")

# ViTConfig fields with the same name and meaning in timm's VisionTransformer(**kwargs)
TIMM_ARGS = ("img_size", "patch_size", "in_chans", "num_classes", "global_pool", "embed_dim", "depth", "num_heads",
             "mlp_ratio", "qkv_bias", "qk_norm", "proj_bias", "init_values", "class_token", "no_embed_class",
             "reg_tokens", "pre_norm", "final_norm", "fc_norm")
# the kwargs of timm's Eva (DINOv3, EVA-02, PE) with vitkit's names and meaning
EVA_ARGS = ("img_size", "patch_size", "in_chans", "num_classes", "global_pool", "embed_dim", "depth", "num_heads",
            "mlp_ratio", "qkv_bias", "init_values", "class_token", "no_embed_class")
PCFG_KEYS = ("input_size", "mean", "std", "crop_pct", "crop_mode", "interpolation", "num_classes")
# vitkit's multi-label flag rides at the top level of config.json: timm ignores unknown top-level keys, but
# builds its PretrainedCfg(**pretrained_cfg) and fails on an unknown key inside pretrained_cfg
MULTI_LABEL_KEY = "multi_label"


def _hints(ckpt: Checkpoint, tensors: Any) -> dict[str, Any]:
    """What the folder's config.json states beyond the shapes (a known ``architecture`` fills the rest)."""
    model_args = (ckpt.config or {}).get("model_args") or {}
    return {k: v for k, v in model_args.items() if k in NON_INFERABLE}


def _architecture(ckpt: Checkpoint) -> str | None:
    name = (ckpt.config or {}).get("architecture")
    return name if isinstance(name, str) else None


def _pretrained_cfg(ckpt: Checkpoint) -> dict[str, Any] | None:
    """The preprocessing the folder's config.json states; a NaFlexVit file that states no patch budget runs at
    its own aspect ratio with the budget of its position grid (16 x 16: 256 patches)."""
    out = stated_pretrained_cfg(ckpt.config or {})
    grid = next((tensor_info(ckpt.tensors, k)[0] for k in ckpt.tensors if k.endswith(NAFLEX_POSITIONS)), None)
    if grid is not None and len(grid) == 4:
        out = {**(out or {}), "max_num_patches": int(grid[1] * grid[2])}
    return out


def stated_pretrained_cfg(config: dict[str, Any]) -> dict[str, Any] | None:
    """The ``PretrainedCfg`` fields a timm config.json states (its ``pretrained_cfg``, class names, name)."""
    pcfg = config.get("pretrained_cfg")
    if not isinstance(pcfg, dict):
        return None
    out = {k: pcfg[k] for k in PCFG_KEYS if k in pcfg}
    if out.get("crop_mode") not in (None, "center", "squash"):
        del out["crop_mode"]  # timm's 'border' has no vitkit equivalent; the centre crop is the nearest
    labels = config.get("label_names", pcfg.get("label_names"))  # top level, as timm writes it
    if isinstance(labels, list) and all(isinstance(n, str) for n in labels):
        out["label_names"] = tuple(labels)
    if config.get(MULTI_LABEL_KEY) is True:
        out["multi_label"] = True
    if isinstance(config.get("architecture"), str):
        out["timm_name"] = config["architecture"]
    if isinstance(pcfg.get("tag"), str):
        out["tag"] = pcfg["tag"]
    return out


def timm_config_json(model: VisionTransformer) -> dict[str, Any]:
    """A timm Hub-style config.json: architecture, class count, preprocessing and model kwargs (for a rotary
    model, timm's ``Eva`` class: the kwargs it shares with vitkit; the architecture names the rest)."""
    c = model.config
    rotary = c.rope != "none"
    args = {k: getattr(c, k) for k in (EVA_ARGS if rotary else TIMM_ARGS)}
    args["img_size"], args["patch_size"] = list(c.img_size), list(c.patch_size)
    if not rotary and c.act_layer != "gelu" and c.act_layer in ACT_LAYERS:  # timm's get_act_layer builds each
        args["act_layer"] = c.act_layer
    pcfg = model.pretrained_cfg
    out = {"architecture": model.model_name or "vit_custom", "num_classes": c.num_classes,
           "num_features": c.num_features, "model_args": args,
           "pretrained_cfg": {k: v for k, v in (pcfg.to_dict() if pcfg else {}).items() if k in PCFG_KEYS}}
    if pcfg is not None and isinstance(pcfg.label_names, tuple) and len(pcfg.label_names) == c.num_classes:
        out["label_names"] = list(pcfg.label_names)  # where timm's push_to_hub puts them
    if getattr(pcfg, "multi_label", False):
        out[MULTI_LABEL_KEY] = True
    return out


def write(model: VisionTransformer, path: Path) -> Path:
    """A timm state dict as safetensors: ``path`` itself if it ends in .safetensors, else a Hub-style folder."""
    c = model.config
    if c.posemb == "sincos2d":
        raise CheckpointError("Cannot save this model for timm: it has fixed sin-cos position embeddings "
                              "(posemb='sincos2d'), which timm's VisionTransformer cannot build. Save it in the "
                              "'vitkit' or 'npz' (big_vision's layout) format instead.")
    if c.posemb == "none" and c.rope != "dinov3":
        raise CheckpointError("Cannot save this model for timm: it has no position embedding and no DINOv3 rotary "
                              "embedding, which timm's classes cannot build. Save it in the 'vitkit' format instead.")
    if model.config.global_pool == "token_avg":
        raise CheckpointError("Cannot save this model for timm: its head reads the class token and the mean patch "
                              "token side by side (global_pool='token_avg'), which timm's VisionTransformer cannot "
                              "build. Save it in the 'vitkit' format instead.")
    state: dict[str, torch.Tensor] = model.state_dict()
    if c.rope != "none":  # timm's Eva (DINOv3, EVA-02, PE) names layer scales gamma_1, gamma_2
        state = {_EVA_LAYER_SCALE.sub(r"\1gamma_\2", k): v for k, v in state.items()}
    if path.suffix == ".safetensors":
        return write_safetensors(state, path)
    write_safetensors(state, path / "model.safetensors")
    write_json(timm_config_json(model), path / "config.json")
    return path


FAMILY = Family(
    name="timm",
    description="timm state dicts: patch_embed.proj.weight, blocks.0.attn.qkv.weight, ...",
    signatures=(r"(^|\.)patch_embed\.proj\.weight$", r"(^|\.)embeds\.proj\.weight$"),
    rules=RULES,
    numerics=TIMM,
    prefixes=("module.", "_orig_mod."),
    hints=_hints,
    pretrained_cfg=_pretrained_cfg,
    architecture=_architecture,
    write=write,
)
