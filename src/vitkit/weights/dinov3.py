"""Meta's original DINOv3 checkpoints (``dinov3_vits16_pretrain_lvd1689m-*.pth`` and the like), read as timm's
DINOv3 checkpoint filter reads them.

Meta names the register tokens ``storage_tokens``, keeps one ``qkv.bias`` whose key part its ``bias_mask``
zeroes at run time (vitkit, as timm, holds the query and value biases alone), names the SwiGLU layers ``w1``,
``w2`` (gate, value) and ``w3`` (output), and stores buffers and pretraining-only tensors (``rope_embed.periods``,
``mask_token``, ``local_cls_norm``, distillation ``projectors``) that an image model does not load. The
architecture is DINOv3's: rotary embeddings alone (no position embedding), four registers, layer scale,
average pooling of the patch tokens after the final norm, LayerNorm eps 1e-5, at 256 pixels.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from .formats import Family
from .mapping import Rule
from .numerics import FamilyNumerics
from .readers import Checkpoint, tensor_info

_QKV_BIAS = re.compile(r"^(blocks\.\d+\.attn\.)qkv\.bias$")
# the heads of a width (64-dimensional, but 7B's 128)
HEADS = {4096: 32}

RULES: tuple[Rule, ...] = (
    ("storage_tokens", "reg_token", "id"),
    ("blocks.{}.mlp.w1.weight", "blocks.{}.mlp.fc1_g.weight", "id"),
    ("blocks.{}.mlp.w1.bias", "blocks.{}.mlp.fc1_g.bias", "id"),
    ("blocks.{}.mlp.w2.weight", "blocks.{}.mlp.fc1_x.weight", "id"),
    ("blocks.{}.mlp.w2.bias", "blocks.{}.mlp.fc1_x.bias", "id"),
    ("blocks.{}.mlp.w3.weight", "blocks.{}.mlp.fc2.weight", "id"),
    ("blocks.{}.mlp.w3.bias", "blocks.{}.mlp.fc2.bias", "id"),
    # an all-zero attention bias (the distilled models') computes nothing: no bias
    ("blocks.{}.attn.qkv.bias", None, "id"),
    ("blocks.{}.attn.qkv.bias_mask", None, "id"),
    ("rope_embed.periods", None, "id"), ("mask_token", None, "id"), ("local_cls_norm.*", None, "id"),
    ("projectors.*", None, "id"),
)


def _prepare(tensors: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """The query and value parts of each attention bias as their own tensors (the key part is masked to zero);
    an all-zero bias is left under its own name, for the table to drop."""
    out = dict(tensors)
    for key in [k for k in tensors if _QKV_BIAS.match(k)]:
        q, _, v = tensors[key].chunk(3, dim=-1)
        if bool(q.any()) or bool(v.any()):
            prefix = _QKV_BIAS.match(key).group(1)  # type: ignore[union-attr]
            out[prefix + "q_bias"], out[prefix + "v_bias"] = q, v
            del out[key]
    return out


def _hints(ckpt: Checkpoint, tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    dim = tensor_info(tensors, "patch_embed.proj.weight")[0][0] if "patch_embed.proj.weight" in tensors else 0
    biased = any(k.endswith("attn.q_bias") for k in tensors)
    return {"img_size": 256, "posemb": "none", "rope": "dinov3", "rope_temperature": 100.0,
            "rope_rotate_half": True, "norm_eps": 1e-5, "global_pool": "avg", "fc_norm": False,
            "num_heads": HEADS.get(dim, max(dim // 64, 1)), "qkv_bias": biased,
            **({"k_bias": False} if biased else {})}


def _pretrained_cfg(ckpt: Checkpoint) -> dict[str, Any]:
    """DINOv3's preprocessing (timm's pretrained configs): ImageNet mean and std, bicubic, 256 pixels."""
    return {"input_size": (3, 256, 256), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
            "interpolation": "bicubic", "crop_pct": 1.0, "crop_mode": "center", "label_names": None,
            "num_classes": 0}


FAMILY = Family(
    name="dinov3",
    description="Meta's original DINOv3 checkpoints: storage_tokens, blocks.0.attn.qkv.bias_mask, ...",
    signatures=(r"^storage_tokens$",),
    rules=RULES,
    numerics=FamilyNumerics("Meta's DINOv3 code", "timm"),
    hints=_hints,
    prepare=_prepare,
    pretrained_cfg=_pretrained_cfg,
)
