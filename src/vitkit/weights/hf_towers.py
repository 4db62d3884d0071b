"""transformers' CLIP and DINOv3 image towers: key tables into vitkit's (timm's) names.

- ``CLIPVisionModel`` (``vision_model.`` prefix stripped) and the vision half of ``CLIPModel`` (its text tower
  and ``logit_scale`` dropped; ``visual_projection`` becomes the bias-free head, as timm maps OpenAI's ``proj``).
  CLIP's ``post_layernorm`` normalises the pooled class token; vitkit's final norm normalises every token, which
  gives the same pooled feature.
- ``Aimv2VisionModel``: RMSNorm after the patch embedding and in every block, separate q, k, v fused into ``qkv``,
  the SwiGLU ``gate_proj``/``up_proj``/``down_proj``; its attention-pooling ``head`` is dropped (reported): vitkit
  averages the normalised patch tokens, as timm's AIMv2 does, and ``last_hidden_state`` is the same.
- ``DINOv3ViTModel``: q, k, v projections fused into ``qkv`` (k without a bias: ``q_bias`` and ``v_bias``),
  layer scales ``lambda1``, the gated MLP's ``gate_proj``/``up_proj``/``down_proj`` as SwiGLU's
  ``fc1_g``/``fc1_x``/``fc2`` (``up_proj`` alone is the plain MLP's ``fc1``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from .mapping import Rule, params
from .readers import RenamedView

_CLIP_LAYER = "encoder.layers.{}."
CLIP_RULES: list[Rule] = [
    ("embeddings.class_embedding", "cls_token", "token"),
    *params("pre_layrnorm", "norm_pre"),  # transformers' spelling
    ("visual_projection.weight", "head.weight", "id"),
    ("text_projection.weight", None, "id"),
    ("embeddings.position_ids", None, "id"),
]

_DINO_LAYER = "layer.{}."
DINOV3_RULES: list[Rule] = [
    *params("embeddings.patch_embeddings", "patch_embed.proj"),
    ("embeddings.cls_token", "cls_token", "id"),
    ("embeddings.register_tokens", "reg_token", "id"),
    *params(_DINO_LAYER + "norm1", "blocks.{}.norm1"),
    *[(f"{_DINO_LAYER}attention.{n}_proj.weight", f"blocks.{{}}.attn.qkv.weight#{n}", "id") for n in "qkv"],
    (_DINO_LAYER + "attention.q_proj.bias", "blocks.{}.attn.q_bias", "id"),
    (_DINO_LAYER + "attention.v_proj.bias", "blocks.{}.attn.v_bias", "id"),
    *params(_DINO_LAYER + "attention.o_proj", "blocks.{}.attn.proj"),
    (_DINO_LAYER + "layer_scale1.lambda1", "blocks.{}.ls1.gamma", "id"),
    (_DINO_LAYER + "layer_scale2.lambda1", "blocks.{}.ls2.gamma", "id"),
    *params(_DINO_LAYER + "norm2", "blocks.{}.norm2"),
    *params(_DINO_LAYER + "mlp.gate_proj", "blocks.{}.mlp.fc1_g"),
    *params(_DINO_LAYER + "mlp.gated_up_proj", "blocks.{}.mlp.fc1_x"),
    *params(_DINO_LAYER + "mlp.up_proj", "blocks.{}.mlp.fc1"),
    *params(_DINO_LAYER + "mlp.down_proj", "blocks.{}.mlp.fc2"),
]
_AIM_LAYER = "encoder.layers.{}."
AIMV2_RULES: list[Rule] = [
    *params("embeddings.patch_embed", "patch_embed.proj"),
    ("embeddings.rms_norm.weight", "patch_embed.norm.weight", "id"),
    *[(f"{_AIM_LAYER}attention.{n}_proj.weight", f"blocks.{{}}.attn.qkv.weight#{n}", "id") for n in "qkv"],
    *[(f"{_AIM_LAYER}attention.{n}_proj.bias", f"blocks.{{}}.attn.qkv.bias#{n}", "id") for n in "qkv"],
    *params(_AIM_LAYER + "attention.out_proj", "blocks.{}.attn.proj"),
    (_AIM_LAYER + "rms_norm1.weight", "blocks.{}.norm1.weight", "id"),
    (_AIM_LAYER + "rms_norm2.weight", "blocks.{}.norm2.weight", "id"),
    *params(_AIM_LAYER + "ffn.gate_proj", "blocks.{}.mlp.fc1_g"),
    *params(_AIM_LAYER + "ffn.up_proj", "blocks.{}.mlp.fc1_x"),
    *params(_AIM_LAYER + "ffn.down_proj", "blocks.{}.mlp.fc2"),
    ("rms_norm.weight", "norm.weight", "id"),
    ("head.*", None, "id"),  # Aimv2's attention-pooling head: vitkit pools by averaging, as timm's AIMv2 does
]
ALL_RULES = [*CLIP_RULES, *DINOV3_RULES, *AIMV2_RULES]


_GATED = re.compile(r"^layer\.(\d+)\.mlp\.gate_proj\.weight$")


def prepare(tensors: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """DINOv3's gated MLP reuses the plain MLP's ``up_proj`` name for its value half: rename it where a
    ``gate_proj`` sits beside it, so one table reads both."""
    gated = {m.group(1) for k in tensors if (m := _GATED.match(k))}
    if not gated:
        return tensors
    names: dict[str, Any] = {}
    for key in tensors:
        parts = key.split(".")
        if len(parts) > 3 and parts[0] == "layer" and parts[1] in gated and parts[2:4] == ["mlp", "up_proj"]:
            names[".".join([*parts[:3], "gated_up_proj", *parts[4:]])] = key
        else:
            names[key] = key
    return RenamedView(tensors, names)
