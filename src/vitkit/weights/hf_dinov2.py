"""transformers' DINOv2 folders beyond ViT's names: the registers variant, and writing DINOv2 back.

``Dinov2WithRegistersModel`` adds its class token's position embedding before it puts the register tokens
after the class token (registers get no position). vitkit does as timm does for DINOv2 with registers: the
class token holds its position (``cls_token + position_embeddings[:, :1]``) and ``pos_embed`` covers the
patches only (``no_embed_class``), which is the same sum. Writing reverses it. The registers variant resamples
positions with bicubic + antialias (timm's numerics), plain ``Dinov2Model`` without antialias.

Written back: ``Dinov2Model`` / ``Dinov2WithRegistersModel`` (the class token, no head) and their
``...ForImageClassification`` (the class and mean patch tokens into one linear head), with layer scale and a
plain or SwiGLU MLP; anything transformers' DINOv2 classes cannot say is refused in one line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..config import ViTConfig
from ..errors import CheckpointError
from .mapping import Rule, fused, params
from .readers import TensorView, tensor_info

CLS, POS, REGS = "embeddings.cls_token", "embeddings.position_embeddings", "embeddings.register_tokens"
MODEL_TYPES = ("dinov2", "dinov2_with_registers")
HEAD_PREFIX = {"dinov2": "dinov2.", "dinov2_with_registers": "dinov2_with_registers."}

# the embeddings of both variants (the rest of a layer is hf.DINOV2_RULES; attention is ViT's)
EMBED_RULES: list[Rule] = [
    *params("embeddings.patch_embeddings.projection", "patch_embed.proj"),
    (CLS, "cls_token", "id"),
    (REGS, "reg_token", "id"),
    (POS, "pos_embed", "id"),
]


class _FoldedView(TensorView):
    """A registers checkpoint's tensors with the class token's position moved into the class token."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        self._tensors, self._names = tensors, dict.fromkeys(tensors)

    def __getitem__(self, key: str) -> torch.Tensor:
        if key == CLS:  # (1, 1, D) + (1, 1, D): the class token as transformers adds its position
            return self._tensors[CLS] + self._tensors[POS][:, :1]
        if key == POS:
            return self._tensors[POS][:, 1:]  # (1, 1 + N, D) -> (1, N, D): the patches' positions
        return self._tensors[key]

    def header(self, key: str) -> tuple[tuple[int, ...], str]:
        shape, dtype = tensor_info(self._tensors, key)
        return ((shape[0], shape[1] - 1, *shape[2:]) if key == POS and len(shape) == 3 else shape), dtype


def fold_registers(tensors: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """A ``Dinov2WithRegisters`` checkpoint in vitkit's layout (others as they are)."""
    if not all(k in tensors for k in (CLS, POS, REGS)):
        return tensors  # DINOv3's registers come with rotary positions, no position table
    shape = tensor_info(tensors, POS)[0]
    if len(shape) != 3 or shape[1] < 2:
        raise CheckpointError(f"{POS} has shape {shape}, expected (1, 1 + patches, width); the file is damaged.")
    return _FoldedView(tensors)


def hints(config: Mapping[str, Any]) -> dict[str, Any]:
    """What a registers folder's config says beyond the plain DINOv2's: positions for the patches only, and
    transformers' antialiased resampling of them."""
    if config.get("model_type") != "dinov2_with_registers":
        return {}
    return {"no_embed_class": True, "posemb_resample": "timm"}


# ---------------------------------------------------------------------- writing
_LAYER = "encoder.layer.{}."
ATTENTION_RULES: list[Rule] = [*fused(_LAYER + "attention.attention.QKV", "blocks.{}.attn.qkv"),
                               *params(_LAYER + "attention.output.dense", "blocks.{}.attn.proj")]
LAYER_RULES: list[Rule] = [
    *params(_LAYER + "norm1", "blocks.{}.norm1"),
    (_LAYER + "layer_scale1.lambda1", "blocks.{}.ls1.gamma", "id"),
    *params(_LAYER + "norm2", "blocks.{}.norm2"),
    (_LAYER + "layer_scale2.lambda1", "blocks.{}.ls2.gamma", "id"),
    *params("layernorm", "norm"),
]
MLP_RULES: list[Rule] = [*params(_LAYER + "mlp.fc1", "blocks.{}.mlp.fc1"),
                         *params(_LAYER + "mlp.fc2", "blocks.{}.mlp.fc2")]
# SwiGLU on disk: one packed weights_in (gate first, then value), as vitkit's swiglu_packed fc1 holds them
SWIGLU_RULES: list[Rule] = [*params(_LAYER + "mlp.weights_in", "blocks.{}.mlp.fc1"),
                            *params(_LAYER + "mlp.weights_out", "blocks.{}.mlp.fc2")]
READ_RULES: list[Rule] = [*LAYER_RULES, *MLP_RULES, *SWIGLU_RULES]  # beside ViT's (attention, embeddings)

UNSUPPORTED: list[tuple[Callable[[ViTConfig], bool], str]] = [
    (lambda c: c.reg_tokens > 0 and not c.no_embed_class, "register tokens with their own positions"),
    (lambda c: c.reg_tokens == 0 and c.no_embed_class, "position embeddings that skip the class token"),
    (lambda c: c.distilled, "a distillation token"),
    (lambda c: c.global_pool != ("token_avg" if c.num_classes else "token"),
     "a pooling other than the class token (no head) or the class and mean patch tokens (a classifier)"),
    (lambda c: bool(c.representation_size) or c.use_fc_norm or c.pre_norm or not c.final_norm,
     "a pre-logits layer, an fc-norm, a pre-norm or no final norm"),
    (lambda c: c.mlp_layer not in ("mlp", "swiglu_packed"), "an MLP other than a plain or a packed SwiGLU one"),
    (lambda c: c.qk_norm or c.norm_layer != "layernorm" or c.qk_scale is not None,
     "qk-norm, RMSNorm or a custom attention scale"),
    (lambda c: not c.proj_bias or c.patch_bias is False, "layers without bias"),
    (lambda c: c.patch_size[0] != c.patch_size[1] or c.img_size[0] != c.img_size[1], "non-square patches or input"),
    (lambda c: c.embed_proj > 0 or c.normalize_features, "an embedding projection or unit-length features"),
]


def is_dinov2(config: ViTConfig) -> bool:
    """A model transformers' DINOv2 classes describe, if any: layer scale and a class token with learned absolute
    positions (DINOv3's rotary positions are another model)."""
    return bool(config.init_values) and config.class_token and config.posemb == "learn" and config.rope == "none"


def architecture(config: ViTConfig) -> str:
    family = "Dinov2WithRegisters" if config.reg_tokens else "Dinov2"
    return family + ("ForImageClassification" if config.num_classes else "Model")


def _hf_swiglu_hidden(dim: int, ratio: float) -> int:
    """Dinov2SwiGLUFFN's width: 2/3 of int(dim * mlp_ratio), rounded up to a multiple of 8."""
    return (int(int(dim * ratio) * 2 / 3) + 7) // 8 * 8


def mlp_ratio(c: ViTConfig) -> int | None:
    """transformers' ``mlp_ratio`` (an integer in Dinov2Config) that gives the MLP width int(embed_dim * mlp_ratio)
    of a vitkit model (SwiGLU: after transformers' 2/3 and rounding), or None when none does."""
    hidden = int(c.embed_dim * c.mlp_ratio)
    if c.mlp_layer != "swiglu_packed":
        return int(c.mlp_ratio) if c.embed_dim * int(c.mlp_ratio) == hidden else None
    return next((r for r in range(1, 65) if _hf_swiglu_hidden(c.embed_dim, r) == hidden), None)


def problems(config: ViTConfig, act_to_hf: Mapping[str, str]) -> list[str]:
    """What transformers' DINOv2 classes cannot say about a model of ``config``."""
    found = [why for test, why in UNSUPPORTED if test(config)]
    if config.mlp_layer == "mlp" and config.act_layer not in act_to_hf:
        found.append(f"the activation {config.act_layer!r}")
    if mlp_ratio(config) is None:
        found.append(f"an MLP width of {int(config.embed_dim * config.mlp_ratio)}, which no integer mlp_ratio gives")
    return found


def rules(config: ViTConfig) -> list[Rule]:
    """The table of a model of ``config`` (a classifier's backbone under ``dinov2.`` / ``dinov2_with_registers.``)."""
    mlp = SWIGLU_RULES if config.mlp_layer == "swiglu_packed" else MLP_RULES
    backbone = [*EMBED_RULES, *ATTENTION_RULES, *LAYER_RULES, *mlp]
    if not config.reg_tokens:
        backbone = [rule for rule in backbone if rule[0] != REGS]
    if not config.num_classes:
        return backbone
    prefix = HEAD_PREFIX[model_type(architecture(config))]
    return [(prefix + src, dst, tf) for src, dst, tf in backbone] + params("classifier", "head")


def model_type(arch: str) -> str:
    return "dinov2_with_registers" if arch.startswith("Dinov2WithRegisters") else "dinov2"


def finish_tensors(tensors: dict[str, torch.Tensor], config: ViTConfig) -> dict[str, torch.Tensor]:
    """Written tensors as transformers holds them: the mask token it always has (zeros: vitkit has none), and
    with registers the class token's position back in the table (zeros: the class token holds the sum)."""
    prefix = HEAD_PREFIX[model_type(architecture(config))] if config.num_classes else ""
    out = {**tensors, prefix + "embeddings.mask_token": torch.zeros(1, config.embed_dim)}
    if config.reg_tokens:
        pos = tensors[prefix + POS]
        out[prefix + POS] = torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1)  # (1, N, D) -> (1, 1 + N, D)
    return out


def config_json(config: ViTConfig, arch: str, act_to_hf: Mapping[str, str]) -> dict[str, Any]:
    c = config
    swiglu = c.mlp_layer == "swiglu_packed"
    out: dict[str, Any] = {
        "architectures": [arch], "model_type": model_type(arch), "hidden_size": c.embed_dim,
        "num_hidden_layers": c.depth, "num_attention_heads": c.num_heads,
        "mlp_ratio": mlp_ratio(c), "patch_size": c.patch_size[0],
        "image_size": c.img_size[0], "num_channels": c.in_chans, "layer_norm_eps": c.norm_eps,
        # (SwiGLU's is SiLU whatever hidden_act says; the model's own is kept, as transformers' folders keep it)
        "hidden_act": act_to_hf.get(c.act_layer, "gelu") if swiglu else act_to_hf[c.act_layer],
        "use_swiglu_ffn": swiglu,
        "qkv_bias": c.qkv_bias, "layerscale_value": float(c.init_values), "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0, "drop_path_rate": 0.0, "dtype": "float32"}
    if c.reg_tokens:
        out["num_register_tokens"] = c.reg_tokens
    return out
