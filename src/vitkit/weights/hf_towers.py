"""transformers' CLIP, AIMv2 and DINOv3 image towers: key tables into vitkit's (timm's) names, and writing them.

- ``CLIPVisionModel`` (``vision_model.`` prefix stripped) and the vision half of ``CLIPModel`` (its text tower
  and ``logit_scale`` dropped; ``visual_projection`` becomes the bias-free head, as timm maps OpenAI's ``proj``).
  CLIP's ``post_layernorm`` normalises the pooled class token; vitkit's final norm normalises every token, which
  gives the same pooled feature.
- ``Aimv2VisionModel``: RMSNorm after the patch embedding and in every block, separate q, k, v fused into ``qkv``,
  the SwiGLU ``gate_proj``/``up_proj``/``down_proj``; its attention-pooling ``head`` is dropped (reported): vitkit
  averages the normalised patch tokens, as timm's AIMv2 does, and ``last_hidden_state`` is the same.
- ``DINOv3ViTModel``: q, k, v projections fused into ``qkv`` (k without a bias: ``q_bias`` and ``v_bias``),
  layer scales ``lambda1``, the gated MLP's ``gate_proj``/``up_proj``/``down_proj`` as SwiGLU's
  ``fc1_g``/``fc1_x``/``fc2`` (``up_proj`` alone is the plain MLP's ``fc1``); a folder with a key bias too reads
  its three biases as one fused bias. Its ``config.json`` states the rotary base, biases and image size.

Written back as ``DINOv3ViTModel``, ``CLIPVisionModel`` / ``CLIPVisionModelWithProjection`` (a bias-free head as
``visual_projection``) and ``Aimv2VisionModel`` (no attention-pooling head: ``use_head=False``); what a class
cannot say is refused in one line naming it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..config import ViTConfig
from ..errors import CheckpointError
from .mapping import Remapped, Rule, fused, params, remap
from .readers import RenamedView, TensorView, tensor_info

_CLIP_LAYER = "encoder.layers.{}."
CLIP_RULES: list[Rule] = [
    ("embeddings.class_embedding", "cls_token", "token"),
    *params("pre_layrnorm", "norm_pre"),  # transformers' spelling
    ("visual_projection.weight", "head.weight", "id"),
    ("visual_projection.zero_bias", "head.bias", "id"),
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
DINOV3_FULL_BIAS: list[Rule] = [(f"{_DINO_LAYER}attention.{n}_proj.full_bias", f"blocks.{{}}.attn.qkv.bias#{n}", "id")
                                for n in "qkv"]
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
ALL_RULES = [*CLIP_RULES, *DINOV3_RULES, *DINOV3_FULL_BIAS, *AIMV2_RULES]


_GATED = re.compile(r"^layer\.(\d+)\.mlp\.gate_proj\.weight$")


def _renamed_in_layers(tensors: Mapping[str, torch.Tensor], marker: re.Pattern[str],
                       rename: Callable[[list[str]], str | None]) -> Mapping[str, torch.Tensor]:
    """A view with the keys of the layers where ``marker`` matches a key renamed by ``rename`` (the key's
    dot-separated parts -> the new name, or None to keep it)."""
    layers = {m.group(1) for k in tensors if (m := marker.match(k))}
    if not layers:
        return tensors
    names: dict[str, Any] = {}
    for key in tensors:
        parts = key.split(".")
        new = rename(parts) if len(parts) > 2 and parts[0] == "layer" and parts[1] in layers else None
        names[new or key] = key
    return RenamedView(tensors, names)


def prepare(tensors: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """A tower folder's tensors as the tables read them: DINOv3's gated MLP and key bias renamed, CLIP's visual
    projection given its zero bias."""
    return prepare_projection(prepare_biases(prepare_gated(tensors)))


def prepare_gated(tensors: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """DINOv3's gated MLP reuses the plain MLP's ``up_proj`` name for its value half: rename it where a
    ``gate_proj`` sits beside it, so one table reads both."""
    return _renamed_in_layers(tensors, _GATED, lambda parts: ".".join([*parts[:3], "gated_up_proj", *parts[4:]])
                              if parts[2:4] == ["mlp", "up_proj"] else None)


# ---------------------------------------------------------------------- reading: what a tower's config.json says
_FULL_BIAS = re.compile(r"^layer\.(\d+)\.attention\.k_proj\.bias$")


def _bias_form(config: Mapping[str, Any], where: str) -> dict[str, Any]:
    """vitkit's q/k/v bias fields of DINOv3ViTConfig's query_bias, key_bias and value_bias."""
    q, k, v = (bool(config.get(f"{n}_bias", d)) for n, d in (("query", True), ("key", False), ("value", True)))
    if q == k == v:
        return {"qkv_bias": q}
    if q and v and not k:
        return {"qkv_bias": True, "k_bias": False}
    raise CheckpointError(f"{where}: query_bias={q}, key_bias={k}, value_bias={v} is a bias layout vitkit's attention "
                          "does not have (all three, none, or the query and value ones). Use the checkpoint as "
                          "transformers saved it.")


def hints(config: Mapping[str, Any], where: str) -> dict[str, Any]:
    """ViTConfig fields a DINOv3 or AIMv2 ``config.json`` states that tensor shapes cannot tell (CLIP's are ViT's)."""
    kind = config.get("model_type")
    gated = kind == "aimv2_vision_model" or (kind == "dinov3_vit" and config.get("use_gated_mlp", False))
    act = config.get("hidden_act", "silu")
    if gated and act != "silu":
        raise CheckpointError(f"{where}: a gated MLP with hidden_act={act!r}: vitkit's SwiGLU gates with SiLU "
                              "(hidden_act='silu', as the published DINOv3 and AIMv2 models do). Use a checkpoint with "
                              "hidden_act='silu'.")
    if kind == "aimv2_vision_model" and config.get("is_native", False):
        raise CheckpointError(f"{where}: is_native=True (AIMv2's fixed sin-cos positions at each image's size) is not "
                              "a layout vitkit loads; use the fixed-resolution AIMv2 checkpoints.")
    if kind != "dinov3_vit":
        return {}
    return {"posemb": "none", "rope": "dinov3", "rope_rotate_half": True,
            "rope_temperature": float(config.get("rope_theta", 100.0)), "norm_eps": config.get("layer_norm_eps", 1e-5),
            "img_size": config.get("image_size", 224), **_bias_form(config, where)}


class _ZeroBiasView(TensorView):
    """CLIP's bias-free visual projection with a zero bias beside it, so that it is an ordinary head."""

    KEY = "visual_projection.zero_bias"

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        self._tensors, self._names = tensors, {**dict.fromkeys(tensors), self.KEY: None}

    def __getitem__(self, key: str) -> torch.Tensor:
        if key == self.KEY:
            weight = self._tensors["visual_projection.weight"]
            return torch.zeros(weight.shape[:1], dtype=weight.dtype)
        return self._tensors[key]

    def header(self, key: str) -> tuple[tuple[int, ...], str]:
        if key == self.KEY:
            shape, dtype = tensor_info(self._tensors, "visual_projection.weight")
            return shape[:1], dtype
        return tensor_info(self._tensors, key)


def prepare_projection(tensors: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """CLIP's visual projection (no bias) read as a head with a zero bias."""
    if "visual_projection.weight" not in tensors or "visual_projection.bias" in tensors:
        return tensors
    return _ZeroBiasView(tensors)


def prepare_biases(tensors: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """A DINOv3 folder with a key bias too: its q, k and v biases read as one fused bias (``full_bias``), not as
    the q and v biases of the usual layout."""
    return _renamed_in_layers(tensors, _FULL_BIAS, lambda parts: ".".join([*parts[:4], "full_bias"])
                              if len(parts) == 5 and parts[2] == "attention" and parts[4] == "bias"
                              and parts[3] in ("q_proj", "k_proj", "v_proj") else None)


# ---------------------------------------------------------------------- writing
Problem = tuple[Callable[[ViTConfig], bool], str]
_COMMON: list[Problem] = [
    (lambda c: c.distilled, "a distillation token"),
    (lambda c: c.qk_norm or c.attn_norm or c.mlp_norm, "qk-norm or a norm inside the attention or MLP"),
    (lambda c: c.qk_scale is not None, "a custom attention scale"),
    (lambda c: bool(c.representation_size) or c.use_fc_norm or not c.final_norm,
     "a pre-logits layer, an fc-norm or no final norm"),
    (lambda c: c.embed_proj > 0 or c.normalize_features, "an embedding projection or unit-length features"),
    (lambda c: not c.qkv_fused, "separate q, k, v projections (qkv_fused=False)"),
    (lambda c: c.patch_size[0] != c.patch_size[1], "non-square patches"),
]
_LEARNED_POSITIONS: list[Problem] = [
    (lambda c: c.reg_tokens > 0, "register tokens"),
    (lambda c: c.posemb != "learn" or c.rope != "none", "position embeddings other than a learned table"),
    (lambda c: c.img_size[0] != c.img_size[1], "a non-square input (its position table is square)"),
]
TOWER_PROBLEMS: dict[str, list[Problem]] = {
    "DINOv3ViTModel": [
        (lambda c: not c.class_token, "no class token"),
        (lambda c: c.posemb != "none", "an absolute position embedding beside the rotary one"),
        (lambda c: not c.rope_rotate_half or c.rope_grid_offset != 0 or c.rope_grid_indexing != "ij"
         or c.rope_ref_grid is not None, "rotary settings other than DINOv3's (rotate_half, no offset, 'ij', no "
                                         "reference grid)"),
        (lambda c: c.pre_norm or c.patch_norm or c.norm_layer != "layernorm", "a pre-norm, a patch norm or RMSNorm"),
        (lambda c: c.mlp_layer == "swiglu_packed", "a packed SwiGLU MLP"),
        (lambda c: c.num_classes > 0, "a classifier head (DINOv3ViTModel has none)"),
        (lambda c: c.global_pool not in ("token", "avg"), "a pooling other than the class or mean patch token"),
    ],
    "CLIPVisionModel": [
        *_LEARNED_POSITIONS,
        (lambda c: not c.class_token or c.no_embed_class or c.global_pool != "token",
         "a pooling other than the class token (with its position)"),
        (lambda c: not c.pre_norm or c.patch_norm or c.norm_layer != "layernorm" or bool(c.init_values),
         "no pre-norm, a patch norm, RMSNorm or layer scale"),
        (lambda c: c.mlp_layer != "mlp", "a gated MLP"),
        (lambda c: not (c.qkv_bias and c.k_bias and c.proj_bias and c.mlp_has_bias),
         "attention or MLP layers without bias"),
    ],
    "Aimv2VisionModel": [
        *_LEARNED_POSITIONS,
        (lambda c: c.class_token or c.global_pool != "avg", "a class token or a pooling other than the mean token"),
        (lambda c: c.num_classes > 0, "a classifier head (Aimv2VisionModel has none)"),
        (lambda c: c.pre_norm or c.norm_layer != "rmsnorm" or bool(c.init_values),
         "a pre-norm, LayerNorm or layer scale"),
        (lambda c: c.mlp_layer != "swiglu", "an MLP other than a separate-gate SwiGLU"),
        (lambda c: c.qkv_bias != c.proj_bias or (c.qkv_bias and not c.k_bias),
         "an attention bias layout other than all four projections with or without bias"),
    ],
}
TOWER_PROBLEMS["CLIPVisionModelWithProjection"] = TOWER_PROBLEMS["CLIPVisionModel"]
MODEL_TYPES = {"DINOv3ViTModel": "dinov3_vit", "CLIPVisionModel": "clip_vision_model",
               "CLIPVisionModelWithProjection": "clip_vision_model", "Aimv2VisionModel": "aimv2_vision_model"}


def architecture(config: ViTConfig) -> str | None:
    """The transformers image-tower class a vitkit model of ``config`` is written as (None: ViT's or DINOv2's)."""
    if config.rope == "dinov3":
        return "DINOv3ViTModel"
    if config.rope != "none":
        return None
    if config.patch_norm:
        return "Aimv2VisionModel"
    if config.pre_norm:
        return "CLIPVisionModelWithProjection" if config.num_classes else "CLIPVisionModel"
    return None


def _nonzero(state: Mapping[str, torch.Tensor], key: str) -> bool:
    tensor = state.get(key)
    return tensor is not None and bool(tensor.detach().abs().max() > 0)


def problems(config: ViTConfig, arch: str, state: Mapping[str, torch.Tensor],
             act_to_hf: Mapping[str, str]) -> list[str]:
    """What ``arch`` cannot say about a model of ``config`` with the weights ``state``."""
    found = [why for test, why in [*_COMMON, *TOWER_PROBLEMS[arch]] if test(config)]
    if config.mlp_layer == "mlp" and config.act_layer not in act_to_hf:
        found.append(f"the activation {config.act_layer!r}")
    if arch.startswith("CLIP"):
        if _nonzero(state, "patch_embed.proj.bias"):
            found.append("a patch-embedding bias (CLIP's has none)")
        if _nonzero(state, "head.bias"):
            found.append("a head with a bias (CLIP's visual projection has none)")
    return found


def _clip_rules(config: ViTConfig) -> list[Rule]:
    layer = "encoder.layers.{}."
    backbone: list[Rule] = [
        ("embeddings.class_embedding", "cls_token", "token"),
        ("embeddings.patch_embedding.weight", "patch_embed.proj.weight", "patch"),
        ("embeddings.position_embedding.weight", "pos_embed", "batch"),
        *params("pre_layrnorm", "norm_pre"),
        *params(layer + "layer_norm1", "blocks.{}.norm1"),
        *fused(layer + "self_attn.QKV", "blocks.{}.attn.qkv", ("q_proj", "k_proj", "v_proj")),
        *params(layer + "self_attn.out_proj", "blocks.{}.attn.proj"),
        *params(layer + "layer_norm2", "blocks.{}.norm2"),
        *params(layer + "mlp.fc1", "blocks.{}.mlp.fc1"),
        *params(layer + "mlp.fc2", "blocks.{}.mlp.fc2"),
        *params("post_layernorm", "norm"),
    ]
    head = [("visual_projection.weight", "head.weight", "id")] if config.num_classes else []
    return [("vision_model." + src, dst, tf) for src, dst, tf in backbone] + head


def _aimv2_rules() -> list[Rule]:
    return [("embeddings.position_embedding.weight", "pos_embed", "batch"),
            *[row for row in AIMV2_RULES if row[1] is not None]]


def _dinov3_rules() -> list[Rule]:
    return [(src.replace(".gated_up_proj.", ".up_proj.").replace(".full_bias", ".bias"), dst, tf)
            for src, dst, tf in (*DINOV3_RULES, *DINOV3_FULL_BIAS, *params("norm", "norm"))]


def written_tensors(config: ViTConfig, arch: str, state: Mapping[str, torch.Tensor]) -> Remapped:
    """``state`` under ``arch``'s names, with what transformers always holds and vitkit may lack: DINOv3's mask
    token (zeros; vitkit has none), a patch-embedding bias (zeros), layer scales (ones) and an empty register
    table; CLIP's all-zero patch and head biases left out (checked by ``problems``)."""
    dim = config.embed_dim
    if arch.startswith("CLIP"):
        state = {k: v for k, v in state.items() if k not in ("patch_embed.proj.bias", "head.bias")}
        return remap(state, _clip_rules(config), reverse=True, num_heads=config.num_heads)
    state = dict(state)
    state.setdefault("patch_embed.proj.bias", torch.zeros(dim))
    if arch == "Aimv2VisionModel":
        return remap(state, _aimv2_rules(), reverse=True, num_heads=config.num_heads)
    for i in range(config.depth):
        for ls in ("ls1", "ls2"):
            state.setdefault(f"blocks.{i}.{ls}.gamma", torch.ones(dim))
    state.setdefault("reg_token", torch.zeros(1, 0, dim))
    out = remap(state, _dinov3_rules(), reverse=True, num_heads=config.num_heads)
    out.tensors["embeddings.mask_token"] = torch.zeros(1, 1, dim)
    return out


def config_json(config: ViTConfig, arch: str, act_to_hf: Mapping[str, str]) -> dict[str, Any]:
    """``config.json`` of ``arch`` for a model of ``config``."""
    c = config
    gated = c.mlp_layer == "swiglu"
    out: dict[str, Any] = {
        "architectures": [arch], "model_type": MODEL_TYPES[arch], "hidden_size": c.embed_dim,
        "intermediate_size": c.mlp_hidden, "num_hidden_layers": c.depth, "num_attention_heads": c.num_heads,
        "num_channels": c.in_chans, "patch_size": c.patch_size[0],
        "image_size": c.img_size[0] if c.img_size[0] == c.img_size[1] else list(c.img_size),
        "hidden_act": "silu" if gated else act_to_hf[c.act_layer], "attention_dropout": 0.0, "dtype": "float32"}
    if arch == "DINOv3ViTModel":
        out.update(layer_norm_eps=c.norm_eps, rope_theta=c.rope_temperature, query_bias=c.qkv_bias,
                   key_bias=c.qkv_bias and c.k_bias, value_bias=c.qkv_bias, proj_bias=c.proj_bias,
                   mlp_bias=c.mlp_has_bias, layerscale_value=float(c.init_values or 1.0), use_gated_mlp=gated,
                   num_register_tokens=c.reg_tokens, drop_path_rate=0.0)
    elif arch == "Aimv2VisionModel":
        out.update(rms_norm_eps=c.norm_eps, qkv_bias=c.qkv_bias, mlp_bias=c.mlp_has_bias, use_head=False,
                   is_native=False)
    else:
        out.update(layer_norm_eps=c.norm_eps)
        if c.num_classes:
            out["projection_dim"] = c.num_classes
    return out
