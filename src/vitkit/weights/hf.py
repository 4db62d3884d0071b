"""Hugging Face transformers checkpoints: ViT, DeiT (with teacher), DINOv2 and SigLIP vision towers (CLIP, AIMv2
and DINOv3 image towers in ``hf_towers.py``).

Folders hold ``config.json`` (the architecture: width, depth, heads, eps, activation) and
``model.safetensors``. Names on disk are transformers' original ones (``encoder.layer.0.attention.
attention.query``), which transformers 5 still writes; its in-memory names (``layers.0.attention.q_proj``)
are read too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import HALF, ViTConfig
from ..data.transforms import PIL_CODES
from ..errors import CheckpointError, Hint
from . import hf_dinov2 as dinov2
from . import hf_towers as towers
from .formats import Family
from .mapping import Rule, fused, params, remap
from .numerics import TRANSFORMERS
from .readers import Checkpoint, tensor_info
from .writers import write_json, write_safetensors

if TYPE_CHECKING:
    from ..model import VisionTransformer


# ---------------------------------------------------------------------- tables
def vit_rules(p: str = "") -> list[Rule]:
    """ViT and DeiT backbones as transformers saves them, under the prefix ``p`` ('vit.', 'deit.' or '')."""
    layer = p + "encoder.layer.{}."
    return [
        *params(p + "embeddings.patch_embeddings.projection", "patch_embed.proj"),
        (p + "embeddings.cls_token", "cls_token", "id"),
        (p + "embeddings.distillation_token", "dist_token", "id"),
        (p + "embeddings.position_embeddings", "pos_embed", "id"),
        *params(layer + "layernorm_before", "blocks.{}.norm1"),
        *fused(layer + "attention.attention.QKV", "blocks.{}.attn.qkv"),
        *params(layer + "attention.output.dense", "blocks.{}.attn.proj"),
        *params(layer + "layernorm_after", "blocks.{}.norm2"),
        *params(layer + "intermediate.dense", "blocks.{}.mlp.fc1"),
        *params(layer + "output.dense", "blocks.{}.mlp.fc2"),
        *params(p + "layernorm", "norm"),
    ]


# DINOv2 (Dinov2Model, Dinov2WithRegistersModel; their classifiers under 'dinov2.' / 'dinov2_with_registers.'):
# ViT's embeddings and attention, with timm-like norms, layer scale and MLP names (hf_dinov2.py)
DINOV2_RULES: list[Rule] = dinov2.READ_RULES
DINOV2_SWIGLU_OUT = "encoder.layer.0.mlp.weights_out.weight"

# transformers 5 in-memory names (a state dict saved with torch.save instead of save_pretrained)
VIT5_RULES = [
    *fused("layers.{}.attention.QKV", "blocks.{}.attn.qkv", ("q_proj", "k_proj", "v_proj")),
    *params("layers.{}.attention.o_proj", "blocks.{}.attn.proj"),
    *params("layers.{}.layernorm_before", "blocks.{}.norm1"),
    *params("layers.{}.layernorm_after", "blocks.{}.norm2"),
    *params("layers.{}.mlp.fc1", "blocks.{}.mlp.fc1"),
    *params("layers.{}.mlp.fc2", "blocks.{}.mlp.fc2"),
]

_SIGLIP_LAYER = "encoder.layers.{}."
SIGLIP_RULES: list[Rule] = [
    # a kernel (SigLIP), or SigLIP 2 NaFlex's linear layer over flattened patches, as vitkit's kernel
    *params("embeddings.patch_embedding", "patch_embed.proj", weight_tf="patch"),
    ("embeddings.position_embedding.weight", "pos_embed", "batch"),
    *params(_SIGLIP_LAYER + "layer_norm1", "blocks.{}.norm1"),
    *fused(_SIGLIP_LAYER + "self_attn.QKV", "blocks.{}.attn.qkv", ("q_proj", "k_proj", "v_proj")),
    *params(_SIGLIP_LAYER + "self_attn.out_proj", "blocks.{}.attn.proj"),
    *params(_SIGLIP_LAYER + "layer_norm2", "blocks.{}.norm2"),
    *params(_SIGLIP_LAYER + "mlp.fc1", "blocks.{}.mlp.fc1"),
    *params(_SIGLIP_LAYER + "mlp.fc2", "blocks.{}.mlp.fc2"),
    *params("post_layernorm", "norm"),
    ("head.probe", "attn_pool.latent", "id"),
    # nn.MultiheadAttention's fused in_proj is [q; k; v]; vitkit (like timm) keeps q apart and fuses k, v
    *params("head.attention#q", "attn_pool.q", src_names=("in_proj_weight", "in_proj_bias")),
    *params("head.attention#k", "attn_pool.kv#k", src_names=("in_proj_weight", "in_proj_bias")),
    *params("head.attention#v", "attn_pool.kv#v", src_names=("in_proj_weight", "in_proj_bias")),
    *params("head.attention.out_proj", "attn_pool.proj"),
    *params("head.layernorm", "attn_pool.norm"),
    *params("head.mlp.fc1", "attn_pool.mlp.fc1"),
    *params("head.mlp.fc2", "attn_pool.mlp.fc2"),
]

POOLER = params("pooler.dense", "pre_logits.fc")  # dense + tanh on the first token = vitkit's pre_logits

# architecture -> (model_type, backbone rows, head rows)
ARCHS: dict[str, tuple[str, list[Rule], list[Rule]]] = {
    "ViTModel": ("vit", vit_rules(), POOLER),
    "ViTForImageClassification": ("vit", vit_rules("vit."), params("classifier", "head")),
    "DeiTModel": ("deit", vit_rules(), POOLER),
    "DeiTForImageClassificationWithTeacher": ("deit", vit_rules("deit."), [
        *params("cls_classifier", "head"), *params("distillation_classifier", "head_dist")]),
    "SiglipVisionModel": ("siglip_vision_model", SIGLIP_RULES, []),
    "Siglip2VisionModel": ("siglip2_vision_model", SIGLIP_RULES, []),
}
SIGLIP2 = ("Siglip2VisionModel", "Siglip2Model")  # NaFlex: patch sequences, positions resized per image

DROPPED = [("embeddings.mask_token", None, "id"), ("text_model.*", None, "id"),  # other towers of SiglipModel
           ("logit_scale", None, "id"), ("logit_bias", None, "id")]
READ_RULES = tuple(dict.fromkeys([*vit_rules(), *DINOV2_RULES, *VIT5_RULES, *SIGLIP_RULES, *towers.ALL_RULES, *DROPPED,
                                  *(row for _, _, heads in ARCHS.values() for row in heads)]))

ACT_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "quick_gelu": "quick_gelu", "relu": "relu",
             "silu": "silu"}
HF_TO_ACT = {**{v: k for k, v in ACT_TO_HF.items()}, "gelu_new": "gelu_tanh", "gelu_fast": "gelu_tanh",
             "gelu_python": "gelu", "swish": "silu"}
HF_FIELDS = {"hidden_size": "embed_dim", "num_hidden_layers": "depth", "num_attention_heads": "num_heads",
             "num_channels": "in_chans", "layer_norm_eps": "norm_eps", "rms_norm_eps": "norm_eps",
             "image_size": "img_size"}
# architectures whose outputs vitkit cannot reproduce, and why
REFUSED = {"DeiTForImageClassification": "its classifier reads the class token only, while a distilled vitkit "
                                         "model averages the class and distillation heads; use DeiTModel or "
                                         "DeiTForImageClassificationWithTeacher weights",
           "Siglip2ForImageClassification": "its classifier reads the mean of the patch tokens, not the attention-"
                                            "pooled feature of Siglip2VisionModel; use Siglip2VisionModel or "
                                            "Siglip2Model weights"}
# Pillow's integer resample codes (as preprocessor configs store them) of the filters written and read
RESAMPLE = {code: name for code, name in PIL_CODES.items() if name in ("nearest", "bilinear", "bicubic")}
RESAMPLE_CODES = {name: code for code, name in RESAMPLE.items()}
OWN_PROCESSOR = Hint(", or pass explicit settings to ImageProcessor")  # (Python only)
MULTI_LABEL = "multi_label_classification"  # config.json's problem_type of a sigmoid (multi-label) classifier


# ---------------------------------------------------------------------- reading
def _vision_config(ckpt: Checkpoint) -> dict[str, Any]:
    config = ckpt.config or {}
    return config.get("vision_config") or config  # SiglipModel nests its image tower's config


def _hints(ckpt: Checkpoint, tensors: Any) -> dict[str, Any]:
    arch = ((ckpt.config or {}).get("architectures") or [""])[0]
    if arch in REFUSED:
        raise CheckpointError(f"{ckpt.path} is a {arch}, which vitkit does not load: {REFUSED[arch]}.")
    channels = _vision_config(ckpt).get("num_channels", 3)
    if arch in SIGLIP2 and channels not in (1, 3):
        raise CheckpointError(f"{ckpt.path}: a {arch} with num_channels={channels!r} is not loaded: vitkit reads "
                              "SigLIP 2's flattened-patch embedding for RGB or grey images (3 or 1 channels).")
    siglip = "embeddings.patch_embedding.weight" in tensors
    hints: dict[str, Any] = {"norm_eps": 1e-6, "act_layer": "gelu_tanh"} if siglip else {
        "norm_eps": 1e-12, "act_layer": "gelu"}  # the defaults of SiglipVisionConfig and ViTConfig
    # interpolate_pos_encoding's numerics, at load and for other input sizes; SigLIP 2 NaFlex's per-image resize
    hints["posemb_resample"] = "siglip2" if arch in SIGLIP2 else "hf"
    config = _vision_config(ckpt)
    if config.get("model_type") in dinov2.MODEL_TYPES:
        hints.update(_dinov2_hints(config, arch, tensors))
    hints.update({ours: config[theirs] for theirs, ours in HF_FIELDS.items() if theirs in config})
    hints.update(towers.hints(config, f"{ckpt.path}/config.json"))
    if "hidden_act" in config:
        if config["hidden_act"] not in HF_TO_ACT:
            raise CheckpointError(f"{ckpt.path}: hidden_act={config['hidden_act']!r} is not supported; expected one "
                                  f"of {', '.join(HF_TO_ACT)}.")
        hints["act_layer"] = HF_TO_ACT[config["hidden_act"]]
    return hints


def _dinov2_hints(config: dict[str, Any], arch: str, tensors: Any) -> dict[str, Any]:
    """What a DINOv2 folder's config says beyond its shapes: Dinov2Config's eps, its classifier's pooling (the
    class token and the mean patch token side by side) and the width of a SwiGLU MLP."""
    hints: dict[str, Any] = {"norm_eps": 1e-6, **dinov2.hints(config)}
    if arch in ("Dinov2ForImageClassification", "Dinov2WithRegistersForImageClassification"):
        hints["global_pool"] = "token_avg"
    if config.get("use_swiglu_ffn") and DINOV2_SWIGLU_OUT in tensors:
        dim, hidden = tensor_info(tensors, DINOV2_SWIGLU_OUT)[0]
        ratio = hidden / dim
        hints.update(mlp_layer="swiglu_packed", mlp_ratio=ratio if int(dim * ratio) == hidden else (hidden + .5) / dim)
    return hints


def _hw(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value["height"]), int(value["width"]))


def _geometry(pp: dict[str, Any], refused: list[str]) -> dict[str, Any]:
    """input size, crop_pct and crop_mode of a ViT/DeiT-style processor's resize and centre crop."""
    size = pp.get("size") or {"height": 224, "width": 224}
    size = {"height": size, "width": size} if isinstance(size, int) else size
    crop = _hw(pp["crop_size"]) if pp.get("do_center_crop") and pp.get("crop_size") else None
    if "shortest_edge" in size:  # shorter side to the edge, then centre crop: timm's rule
        if crop is None or crop[0] != crop[1]:
            refused.append("a shortest-edge resize without a square centre crop")
            return {}
        return dict(input_size=(3, *crop), crop_pct=crop[0] / size["shortest_edge"], crop_mode="center")
    if "height" not in size or "width" not in size:
        refused.append(f"size={size!r}")
        return {}
    resized = (size["height"], size["width"])  # both sides resized (squashed), then maybe centre-cropped
    out = crop or resized
    if abs(out[0] / resized[0] - out[1] / resized[1]) > 1e-9:
        refused.append(f"a crop of {out} from {resized} (another fraction of each side)")
    return dict(input_size=(3, *out), crop_pct=out[0] / resized[0], crop_mode="squash")


def _unexpressed(pp: dict[str, Any]) -> list[str]:
    """The settings of a preprocessor config that vitkit's rescale, normalise and resample cannot express."""
    refused = []
    if not pp.get("do_resize", True):
        refused.append("do_resize=False")
    if not pp.get("do_rescale", True) or abs(float(pp.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-12:
        refused.append(f"rescale_factor={pp.get('rescale_factor')} (do_rescale={pp.get('do_rescale', True)})")
    if not pp.get("do_normalize", True):
        refused.append("do_normalize=False")
    if pp.get("resample", 2) not in PIL_CODES:
        refused.append(f"resample={pp.get('resample')!r}")
    return refused


def _refuse(refused: list[str], where: str) -> None:
    if refused:
        raise CheckpointError(f"{where}: vitkit's preprocessing (PretrainedCfg) cannot express {'; '.join(refused)}. "
                              f"Edit the file to a resize + centre crop + rescale by 1/255 + normalize"
                              f"{OWN_PROCESSOR.text}.", hints=(OWN_PROCESSOR,))


def processor_to_pretrained_cfg(pp: dict[str, Any], where: str) -> dict[str, Any]:
    """``PretrainedCfg`` fields of a ``preprocessor_config.json``; a setting it cannot express raises, naming it."""
    refused = _unexpressed(pp)
    out = _geometry(pp, refused)
    _refuse(refused, where)
    out.update(interpolation=PIL_CODES[pp.get("resample", 2)], crop_rounding="floor",  # transformers floors margins
               mean=pp.get("image_mean", HALF), std=pp.get("image_std", HALF))
    return out


def naflex_pretrained_cfg(pp: dict[str, Any], where: str, patch_size: int) -> dict[str, Any]:
    """``PretrainedCfg`` fields of a SigLIP 2 NaFlex ``Siglip2ImageProcessor``: its patch budget, filter, mean and
    std (each image resized to fit the budget at its own aspect ratio, see ``vitkit.patches``)."""
    _refuse(_unexpressed(pp), where)
    stated = pp.get("patch_size", patch_size)
    if stated != patch_size:
        raise CheckpointError(f"{where}: patch_size={stated!r}, but the model's patches are {patch_size}x{patch_size}. "
                              "The processor is from another model; use the files that came with the checkpoint.")
    budget = pp.get("max_num_patches", 256)
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
        raise CheckpointError(f"{where}: max_num_patches={budget!r} is not allowed: expected a positive integer "
                              "(e.g. 256). Fix the file.")
    return dict(max_num_patches=budget, interpolation=PIL_CODES[pp.get("resample", 2)], crop_pct=1.0,
                mean=pp.get("image_mean", HALF), std=pp.get("image_std", HALF))


def processor_fields(pp: dict[str, Any], where: str, config: dict[str, Any]) -> dict[str, Any]:
    """``PretrainedCfg`` fields of a fixed-size or a NaFlex (``max_num_patches``) preprocessor config."""
    if "max_num_patches" in pp:
        return naflex_pretrained_cfg(pp, where, int(config.get("patch_size", 16)))
    return processor_to_pretrained_cfg(pp, where)


def _label_names(config: dict[str, Any]) -> tuple[str, ...] | None:
    """Class names from ``id2label`` (None when they are transformers' placeholders LABEL_0, LABEL_1, ...)."""
    id2label = config.get("id2label") or {}
    try:
        names = tuple(str(id2label[k]) for k in sorted(id2label, key=int))
    except (TypeError, ValueError):
        return None
    if sorted(int(k) for k in id2label) != list(range(len(names))) or names == _placeholders(len(names)):
        return None
    return names


def _placeholders(n: int) -> tuple[str, ...]:
    return tuple(f"LABEL_{i}" for i in range(n))


def image_processor_json(ckpt: Checkpoint) -> dict[str, Any] | None:
    """The folder's image processor settings: preprocessor_config.json, or the image processor inside the
    processor_config.json that transformers 5 saves for a processor of several parts."""
    pp = ckpt.extra.get("preprocessor_config.json") or (ckpt.extra.get("processor_config.json") or {}).get(
        "image_processor")
    return pp if isinstance(pp, dict) and pp else None


def _pretrained_cfg(ckpt: Checkpoint) -> dict[str, Any] | None:
    pp = image_processor_json(ckpt)
    out = processor_fields(pp, f"{ckpt.path}/preprocessor_config.json", _vision_config(ckpt)) if pp else {}
    if (ckpt.config or {}).get("problem_type") == MULTI_LABEL:
        out["multi_label"] = True
    names = _label_names(ckpt.config or {})
    if names:
        out["label_names"] = names
    return out or None


# ---------------------------------------------------------------------- writing
UNSUPPORTED: list[tuple[Callable[[ViTConfig], bool], str]] = [
    (lambda c: c.reg_tokens > 0, "register tokens"),
    (lambda c: c.no_embed_class and c.class_token, "position embeddings that skip the class token"),
    (lambda c: c.global_pool in ("avg", "none"), "average or no pooling"),
    (lambda c: c.global_pool == "token_avg", "a head over the class and mean patch tokens (DINOv2's classifier)"),
    (lambda c: c.global_pool == "map" and (c.class_token or c.num_classes > 0 or bool(c.representation_size)),
     "a MAP head together with a class token, classifier or pre-logits layer"),
    (lambda c: bool(c.representation_size) and c.num_classes > 0, "a pre-logits layer before the classifier"),
    (lambda c: c.qk_norm or bool(c.init_values) or c.pre_norm or not c.final_norm or c.use_fc_norm,
     "qk-norm, layer scale, a pre-norm, an fc-norm or no final norm"),
    (lambda c: c.norm_layer != "layernorm" or c.qk_scale is not None, "RMSNorm or a custom attention scale"),
    (lambda c: not c.proj_bias or c.patch_bias is False or (c.global_pool == "map" and not c.qkv_bias),
     "layers without bias"),
    (lambda c: c.patch_size[0] != c.patch_size[1] or (c.global_pool == "map" and c.img_size[0] != c.img_size[1]),
     "non-square patches (or a non-square SigLIP input)"),
    (lambda c: c.posemb == "sincos2d", "fixed sin-cos position embeddings (posemb='sincos2d')"),
    (lambda c: c.posemb == "none", "no position embedding (rotary embeddings alone)"),
    (lambda c: c.rope != "none", "rotary embeddings"),
    (lambda c: c.embed_proj > 0 or c.normalize_features, "an embedding projection or unit-length features"),
]


def architecture(config: ViTConfig) -> str:
    """The transformers class that has the same outputs as a vitkit model of ``config``."""
    if config.global_pool == "map":
        return "SiglipVisionModel"
    family = "DeiT" if config.distilled else "ViT"
    if not config.num_classes:
        return f"{family}Model"
    return f"{family}ForImageClassification" + ("WithTeacher" if config.distilled else "")


def hf_config_json(config: ViTConfig, arch: str) -> dict[str, Any]:
    c = config
    out: dict[str, Any] = {
        "architectures": [arch], "model_type": ARCHS[arch][0], "hidden_size": c.embed_dim,
        "num_hidden_layers": c.depth, "num_attention_heads": c.num_heads,
        "intermediate_size": int(c.embed_dim * c.mlp_ratio), "patch_size": c.patch_size[0],
        "image_size": c.img_size[0] if c.img_size[0] == c.img_size[1] else list(c.img_size),
        "num_channels": c.in_chans, "layer_norm_eps": c.norm_eps, "hidden_act": ACT_TO_HF[c.act_layer],
        "dtype": "float32"}
    if arch == "SiglipVisionModel":
        out.update(vision_use_head=True, attention_dropout=0.0)
        return out
    out.update(qkv_bias=c.qkv_bias, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
               pooler_output_size=c.representation_size or c.embed_dim, pooler_act="tanh",
               encoder_stride=c.patch_size[0])
    return out


def labels_json(names: tuple[str, ...] | None, num_classes: int) -> dict[str, Any]:
    """``id2label`` / ``label2id`` of the class names (transformers' LABEL_i placeholders without them)."""
    if not num_classes:
        return {}
    names = names if names is not None and len(names) == num_classes else _placeholders(num_classes)
    return {"id2label": {str(i): n for i, n in enumerate(names)}, "label2id": {n: i for i, n in enumerate(names)}}


def preprocessor_json(model: VisionTransformer) -> dict[str, Any] | None:
    """The model's PretrainedCfg as transformers' ViTImageProcessor settings that give the same pixels (what they
    cannot say, e.g. lanczos or timm's rounding of odd crop margins, `convert --verify` reports)."""
    pcfg = model.pretrained_cfg
    if pcfg is None:
        return None
    h, w = model.config.img_size
    resized = pcfg.replace(input_size=(model.config.in_chans, h, w)).resize_size
    # transformers has no keep-ratio resize to a non-square size: such a model is written squashed (and
    # `convert --verify` reports the change)
    squash = pcfg.crop_mode == "squash" or h != w
    size = {"height": resized[0], "width": resized[1]} if squash else {"shortest_edge": resized[0]}
    crop = not squash or resized != (h, w)
    return {"image_processor_type": "ViTImageProcessor", "do_resize": True, "do_rescale": True,
            "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": list(pcfg.mean),
            "image_std": list(pcfg.std), "resample": RESAMPLE_CODES.get(pcfg.interpolation, RESAMPLE_CODES["bicubic"]),
            "size": size, "do_center_crop": crop, "crop_size": {"height": h, "width": w}}


def _no_place(arch: str, unmatched: list[str]) -> None:
    if unmatched:
        raise CheckpointError(f"Cannot save for transformers' {arch}: no place for {', '.join(unmatched)}. "
                              "Save it in the 'vitkit' or 'timm' format instead.")


def _write_folder(model: VisionTransformer, tensors: dict[str, Any], config: dict[str, Any], path: Path) -> Path:
    """model.safetensors, config.json and (when the model has preprocessing) preprocessor_config.json."""
    write_safetensors(tensors, path / "model.safetensors")
    write_json(config, path / "config.json")
    preprocessor = preprocessor_json(model)
    if preprocessor is not None:
        write_json(preprocessor, path / "preprocessor_config.json")
    return path


def _write_tower(model: VisionTransformer, arch: str, path: Path) -> Path:
    c, state = model.config, model.state_dict()
    problems = towers.problems(c, arch, state, ACT_TO_HF)
    if problems:
        raise CheckpointError(f"Cannot save this model as transformers' {arch}: it has {'; '.join(problems)}, which "
                              f"that class lacks. Save it in the 'vitkit' or 'timm' format instead.")
    out = towers.written_tensors(c, arch, state)
    _no_place(arch, out.unmatched)
    return _write_folder(model, out.tensors, towers.config_json(c, arch, ACT_TO_HF), path)


def write(model: VisionTransformer, path: Path) -> Path:
    """A transformers folder: config.json, model.safetensors (transformers' names), preprocessor_config.json."""
    tower = towers.architecture(model.config)
    if tower is not None:
        return _write_tower(model, tower, path)
    c, dino = model.config, dinov2.is_dinov2(model.config)
    problems = dinov2.problems(c, ACT_TO_HF) if dino else [why for test, why in UNSUPPORTED if test(c)]
    if problems:
        classes = "DINOv2 classes" if dino else "ViT, DeiT and SigLIP classes"
        raise CheckpointError(f"Cannot save this model for Hugging Face transformers: it has {'; '.join(problems)}, "
                              f"which transformers' {classes} lack. Save it in the 'vitkit' or 'timm' format instead.")
    arch = dinov2.architecture(c) if dino else architecture(c)
    table = dinov2.rules(c) if dino else [*ARCHS[arch][1], *ARCHS[arch][2]]
    out = remap(model.state_dict(), table, reverse=True, num_heads=c.num_heads)
    _no_place(arch, out.unmatched)
    pcfg = model.pretrained_cfg
    names = pcfg.label_names if pcfg is not None and isinstance(pcfg.label_names, tuple) else None
    config = {**(dinov2.config_json(c, arch, ACT_TO_HF) if dino else hf_config_json(c, arch)),
              **labels_json(names, c.num_classes)}
    if getattr(pcfg, "multi_label", False):
        config["problem_type"] = MULTI_LABEL
    return _write_folder(model, dinov2.finish_tensors(out.tensors, c) if dino else out.tensors, config, path)


FAMILY = Family(
    name="hf",
    description="Hugging Face transformers: embeddings.patch_embeddings.projection.weight, "
                "encoder.layer.0.attention.attention.query.weight, ... (ViT, DeiT, DINOv2, DINOv3, SigLIP, CLIP, "
                "AIMv2)",
    signatures=(r"(^|\.)embeddings\.patch_embeddings\.projection\.weight$",
                r"(^|\.)embeddings\.patch_embedding\.weight$"),
    rules=READ_RULES,
    numerics=TRANSFORMERS,
    prefixes=("vit.", "deit.", "dinov2.", "dinov2_with_registers.", "vision_model."),
    hints=_hints,
    prepare=lambda tensors: dinov2.fold_registers(towers.prepare(tensors)),
    pretrained_cfg=_pretrained_cfg,
    write=write,
    marker=lambda ckpt: "model_type" in (ckpt.config or {}),
)
