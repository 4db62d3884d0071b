"""Image-text checkpoints: transformers' SiglipModel, Siglip2Model and CLIPModel folders, open_clip CLIP folders.

A folder holds config.json (both towers' architectures), model.safetensors and the tokenizer's own files
(spiece.model, tokenizer.json, tokenizer_config.json). The text rules the model was trained with are
decided here, from the architecture, and saved in the text config. SigLIP 2's text tower is SigLIP's; its
image tower is NaFlex (patch sequences at each image's own aspect ratio).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

from ..config import PretrainedCfg, ViTConfig
from ..errors import CheckpointError
from ..imagetext import ImageTextModel
from ..text import TextConfig
from ..tokenizer import TextRules, TextTokenizer, special_id
from .hf import HF_TO_ACT, SIGLIP_RULES, image_processor_json, processor_fields
from .infer import _mlp_ratio
from .mapping import Rule, fused, params, remap
from .readers import Checkpoint, read_checkpoint

ARCHITECTURES = ("SiglipModel", "Siglip2Model", "CLIPModel")

_LAYER = "encoder.layers.{}."
TOWER_BLOCKS: list[Rule] = [
    *params(_LAYER + "layer_norm1", "blocks.{}.norm1"),
    *fused(_LAYER + "self_attn.QKV", "blocks.{}.attn.qkv", ("q_proj", "k_proj", "v_proj")),
    *params(_LAYER + "self_attn.out_proj", "blocks.{}.attn.proj"),
    *params(_LAYER + "layer_norm2", "blocks.{}.norm2"),
    *params(_LAYER + "mlp.fc1", "blocks.{}.mlp.fc1"),
    *params(_LAYER + "mlp.fc2", "blocks.{}.mlp.fc2"),
]
TEXT_RULES: list[Rule] = [
    ("embeddings.token_embedding.weight", "token_embed.weight", "id"),
    ("embeddings.position_embedding.weight", "pos_embed", "batch"),
    *TOWER_BLOCKS,
    *params("final_layer_norm", "norm"),
    *params("head", "head"),
]
CLIP_VISION_RULES: list[Rule] = [
    ("embeddings.class_embedding", "cls_token", "id"),  # (D,): reshaped to (1, 1, D) after the table
    ("embeddings.patch_embedding.weight", "patch_embed.proj.weight", "id"),
    ("embeddings.position_embedding.weight", "pos_embed", "batch"),
    *params("pre_layrnorm", "norm_pre"),
    *TOWER_BLOCKS,
    *params("post_layernorm", "norm"),
]


def _prefixed(rules: list[Rule], src: str, dst: str) -> list[Rule]:
    return [(src + s, None if d is None else dst + d, tf) for s, d, tf in rules]


def rules_for(arch: str) -> list[Rule]:
    """The key table of a transformers image-text architecture (its names -> ImageTextModel's)."""
    if arch == "CLIPModel":
        vision = _prefixed(CLIP_VISION_RULES, "vision_model.", "visual.")
        heads = [("visual_projection.weight", "visual.embed_proj.weight", "id"),
                 ("text_projection.weight", "text.head.weight", "id")]
    else:
        vision = _prefixed(SIGLIP_RULES, "vision_model.", "visual.")
        heads = []
    return [*vision, *_prefixed(TEXT_RULES, "text_model.", "text."), *heads,
            ("logit_scale", "logit_scale", "id"), ("logit_bias", "logit_bias", "id"),
            ("text_model.embeddings.position_ids", None, "id"), ("vision_model.embeddings.position_ids", None, "id")]


def _act(config: dict[str, Any], default: str, where: str) -> str:
    name = config.get("hidden_act", default)
    if name not in HF_TO_ACT:
        raise CheckpointError(f"{where}: hidden_act={name!r} is not supported; expected one of {', '.join(HF_TO_ACT)}.")
    return HF_TO_ACT[name]


def vision_config(arch: str, config: dict[str, Any], where: str) -> ViTConfig:
    v = config.get("vision_config") or {}
    clip = arch == "CLIPModel"
    dim = int(v.get("hidden_size", 768))
    patch = int(v.get("patch_size", 16 if not clip else 32))
    # SigLIP 2 NaFlex: a square grid of num_patches learned positions, resized per image
    side = math.isqrt(int(v.get("num_patches", 256))) * patch if arch == "Siglip2Model" else None
    common = dict(img_size=side or int(v.get("image_size", 224)), patch_size=patch,
                  in_chans=int(v.get("num_channels", 3)), embed_dim=dim, depth=int(v.get("num_hidden_layers", 12)),
                  num_heads=int(v.get("num_attention_heads", 12)), num_classes=0,
                  mlp_ratio=_mlp_ratio(int(v.get("intermediate_size", 3072)), dim),
                  posemb_resample="siglip2" if side else "hf")
    if clip:
        return ViTConfig(**common, pre_norm=True, act_layer=_act(v, "quick_gelu", where),
                         norm_eps=float(v.get("layer_norm_eps", 1e-5)),
                         embed_proj=int(config.get("projection_dim", 512)))
    return ViTConfig(**common, class_token=False, global_pool="map", act_layer=_act(v, "gelu_pytorch_tanh", where),
                     norm_eps=float(v.get("layer_norm_eps", 1e-6)))


def text_config(arch: str, config: dict[str, Any], rules: TextRules, where: str) -> TextConfig:
    t = config.get("text_config") or {}
    clip = arch == "CLIPModel"
    width = int(t.get("hidden_size", 512 if clip else 768))
    return TextConfig(
        vocab_size=int(t.get("vocab_size", 49408 if clip else 32000)), width=width,
        depth=int(t.get("num_hidden_layers", 12)), num_heads=int(t.get("num_attention_heads", 8 if clip else 12)),
        mlp_ratio=_mlp_ratio(int(t.get("intermediate_size", 2048 if clip else 3072)), width),
        embed_dim=int(config.get("projection_dim", 512)) if clip else int(t.get("projection_size", width)),
        act_layer=_act(t, "quick_gelu" if clip else "gelu_pytorch_tanh", where),
        norm_eps=float(t.get("layer_norm_eps", 1e-5 if clip else 1e-6)), causal=clip,
        pool="eot" if clip else "last", eot_id=int(t.get("eos_token_id", 49407 if clip else 1)) if clip else 1,
        head_bias=not clip, rules=rules)


def _special(ckpt: Checkpoint, name: str, default: str) -> str:
    value = (ckpt.extra.get("tokenizer_config.json") or {}).get(name, default)
    return value.get("content", default) if isinstance(value, dict) else str(value)


def _gemma_rules(ckpt: Checkpoint, context_length: int) -> TextRules:
    """SigLIP 2's Gemma tokenizer.json as transformers' Siglip2Tokenizer and Siglip2Processor run it: lowercased,
    the start/end tokens of the file's post-processor (transformers ignores tokenizer_config.json's
    add_bos_token / add_eos_token beside a tokenizer.json), cut and padded to the context length with the pad
    token, on the stated padding side (tokenizer_config.json, else the tokenizer.json's, else Siglip2Tokenizer's
    'left')."""
    config = ckpt.extra.get("tokenizer_config.json") or {}
    padding = (ckpt.extra.get("tokenizer.json") or {}).get("padding") or {}
    side = config.get("padding_side") or str(padding.get("direction", "left")).lower()
    if side not in ("left", "right"):
        raise CheckpointError(f"{ckpt.path / 'tokenizer_config.json'}: padding_side={side!r} is not allowed: "
                              "expected 'left' or 'right'. Fix the file.")
    return TextRules(kind="tokenizers", file="tokenizer.json", context_length=context_length, lowercase=True,
                     canonicalize=False, eos_id=None, padding_side=side)


def _gemma_tokenizer(ckpt: Checkpoint) -> bool:
    """A Gemma tokenizer beside the weights: SigLIP 2 (its fixed-resolution checkpoints are SiglipModel folders)."""
    named = str((ckpt.extra.get("tokenizer_config.json") or {}).get("tokenizer_class") or "")
    if named:
        return named.startswith(("Gemma", "Siglip2"))
    return not (ckpt.path / "spiece.model").is_file() and (ckpt.path / "tokenizer.json").is_file()


def text_rules(arch: str, ckpt: Checkpoint, context_length: int) -> TextRules:
    """The rules each architecture's texts were trained with, with ids from the checkpoint's tokenizer."""
    if arch == "SiglipModel" and _gemma_tokenizer(ckpt):
        arch = "Siglip2Model"  # SigLIP 2 at a fixed resolution: the same text rules as its NaFlex models
    if arch == "SiglipModel":  # SentencePiece; lowercase, no punctuation, one space; </s> at the end; pad 64
        base = TextRules(kind="sentencepiece", file="spiece.model", context_length=context_length,
                         lowercase=True, canonicalize=True)
        names = {"eos_id": _special(ckpt, "eos_token", "</s>"), "pad_id": _special(ckpt, "pad_token", "</s>")}
    elif arch == "Siglip2Model":  # Gemma's tokenizer.json: lowercase, its own end token, the pad token
        base, names = _gemma_rules(ckpt, context_length), {"pad_id": _special(ckpt, "pad_token", "<pad>")}
    else:  # CLIP's BPE tokenizer.json: its normalizer lowercases and cleans spaces, its post-processor adds
        base = TextRules(kind="tokenizers", file="tokenizer.json", context_length=context_length,
                         lowercase=False, canonicalize=False, eos_id=None)  # <|startoftext|> ... <|endoftext|>
        names = {"pad_id": _special(ckpt, "pad_token", "<|endoftext|>")}
    probe = TextTokenizer.from_folder(ckpt.path, base)
    ids = {}
    for field, token in names.items():
        i = special_id(probe.backend, base.kind, token)
        if i is None:
            raise CheckpointError(f"{ckpt.path / base.file}: the tokenizer has no {token!r} token "
                                  f"({field.removesuffix('_id')}), which {arch} needs.")
        ids[field] = i
    return TextRules(**{**base.to_dict(), **ids})


def attach_tokenizer(model: ImageTextModel, folder: Path) -> None:
    """Read the model's tokenizer from ``folder`` and check that its vocabulary fits the text embedding."""
    tok = TextTokenizer.from_folder(folder, model.text_config.rules)
    if tok.vocab_size > model.text_config.vocab_size:
        raise CheckpointError(f"{folder / tok.rules.file}: the tokenizer has {tok.vocab_size} tokens but the text "
                              f"tower embeds {model.text_config.vocab_size}: the tokenizer is from another model. "
                              "Use the tokenizer files that came with the checkpoint.")
    model.tokenizer = tok


def read_transformers(source: str | os.PathLike[str]) -> ImageTextModel:
    """An ``ImageTextModel`` (with its tokenizer) from a transformers SiglipModel, Siglip2Model or CLIPModel folder."""
    ckpt = read_checkpoint(source)
    where = str(ckpt.path)
    arch = ((ckpt.config or {}).get("architectures") or [""])[0]
    if not ckpt.path.is_dir() or arch not in ARCHITECTURES:
        raise CheckpointError(f"{where} is not a transformers image-text folder: expected config.json with "
                              f"architectures {' or '.join(ARCHITECTURES)} (found {arch or 'none'}).")
    config = ckpt.config or {}
    context = int((config.get("text_config") or {}).get("max_position_embeddings", 77 if arch == "CLIPModel" else 64))
    rules = text_rules(arch, ckpt, context)
    vision = vision_config(arch, config, where)
    model = ImageTextModel(vision=vision, text=text_config(arch, config, rules, where),
                           scoring="softmax" if arch == "CLIPModel" else "sigmoid")
    out = remap(ckpt.tensors, rules_for(arch), num_heads=vision.num_heads, source=where)
    state = out.tensors
    _fix_shapes(state)
    attach_tokenizer(model, ckpt.path)  # a tokenizer from another model is named before the weights' shapes
    _load_state(model, state, where)
    pp = image_processor_json(ckpt)
    if pp:
        fields = processor_fields(pp, f"{where}/preprocessor_config.json", config.get("vision_config") or {})
        model.visual.pretrained_cfg = PretrainedCfg.from_dict({**fields, "label_names": None, "num_classes": 0})
    return model.eval()


def _fix_shapes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' and open_clip's layouts of the scale, bias and class token, in place."""
    for name in ("logit_scale", "logit_bias"):
        if name in state:
            state[name] = state[name].reshape(())  # (1,) -> ()
    if "visual.cls_token" in state:
        state["visual.cls_token"] = state["visual.cls_token"].reshape(1, 1, -1)  # (D,) -> (1, 1, D)
    return state


def _load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    expected = model.state_dict()
    if "logit_bias" not in state and "logit_bias" in expected:  # CLIP has no bias: zero
        state["logit_bias"] = torch.zeros(())
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = [f"{what}: {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}"
                 for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise CheckpointError(f"{where}: the weights do not fit the architecture its config.json states "
                              f"({'; '.join(parts)}). The file is damaged or from another model.")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})


# ---------------------------------------------------------------------- open_clip
def _open_clip_blocks(src: str, dst: str) -> list[Rule]:
    block = src + "transformer.resblocks.{}."
    return [
        *params(block + "ln_1", dst + "blocks.{}.norm1"),
        *params(block + "attn", dst + "blocks.{}.attn.qkv", src_names=("in_proj_weight", "in_proj_bias")),
        *params(block + "attn.out_proj", dst + "blocks.{}.attn.proj"),
        *params(block + "ln_2", dst + "blocks.{}.norm2"),
        *params(block + "mlp.c_fc", dst + "blocks.{}.mlp.fc1"),
        *params(block + "mlp.c_proj", dst + "blocks.{}.mlp.fc2"),
    ]


OPEN_CLIP_RULES: list[Rule] = [
    ("token_embedding.weight", "text.token_embed.weight", "id"),
    ("positional_embedding", "text.pos_embed", "batch"),
    *_open_clip_blocks("", "text."),
    *params("ln_final", "text.norm"),
    ("text_projection", "text.head.weight", "T"),  # (width, embed) -> Linear (embed, width)
    ("visual.class_embedding", "visual.cls_token", "id"),  # (D,): reshaped to (1, 1, D) after the table
    ("visual.positional_embedding", "visual.pos_embed", "batch"),
    ("visual.conv1.weight", "visual.patch_embed.proj.weight", "id"),
    *params("visual.ln_pre", "visual.norm_pre"),
    *_open_clip_blocks("visual.", "visual."),
    *params("visual.ln_post", "visual.norm"),
    ("visual.proj", "visual.embed_proj.weight", "T"),
    ("logit_scale", "logit_scale", "id"), ("logit_bias", "logit_bias", "id"),
    ("attn_mask", None, "id"),
]
OPEN_CLIP_CONFIG = "open_clip_config.json"
# what a tower's config may say that these towers do not have, and what it must be for them
_OPEN_CLIP_REFUSED = {"timm_model_name": None, "hf_model_name": None, "no_ln_pre": False, "attentional_pool": False,
                      "pool_type": None, "output_tokens": False, "final_ln_after_pool": False}


def _refuse(cfg: dict[str, Any], where: str) -> None:
    for key, ok in _OPEN_CLIP_REFUSED.items():
        if cfg.get(key, ok) not in (ok, "tok", "argmax"):
            raise CheckpointError(f"{where}: open_clip's {key}={cfg[key]!r} is not supported; vitkit reads open_clip "
                                  "CLIP models with its own VisionTransformer and TextTransformer towers.")


def open_clip_configs(model_cfg: dict[str, Any], where: str) -> tuple[ViTConfig, TextConfig]:
    v, t = model_cfg.get("vision_cfg") or {}, model_cfg.get("text_cfg") or {}
    _refuse(v, where)
    _refuse(t, where)
    act = "quick_gelu" if model_cfg.get("quick_gelu") else "gelu"
    embed = int(model_cfg["embed_dim"])
    width = int(v.get("width", 768))
    vision = ViTConfig(img_size=v.get("image_size", 224), patch_size=v.get("patch_size", 16), embed_dim=width,
                       depth=int(v.get("layers", 12)), num_heads=width // int(v.get("head_width", 64)),
                       mlp_ratio=float(v.get("mlp_ratio", 4.0)), num_classes=0, pre_norm=True, act_layer=act,
                       norm_eps=1e-5, embed_proj=embed)
    text_width, vocab = int(t.get("width", 512)), int(t.get("vocab_size", 49408))
    rules = TextRules(kind="tokenizers", file="tokenizer.json", context_length=int(t.get("context_length", 77)),
                      lowercase=False, canonicalize=False, eos_id=None, pad_id=0)
    text = TextConfig(vocab_size=vocab, width=text_width, depth=int(t.get("layers", 12)),
                      num_heads=int(t.get("heads", 8)), mlp_ratio=float(t.get("mlp_ratio", 4.0)), embed_dim=embed,
                      act_layer=act, norm_eps=1e-5, causal=not t.get("no_causal_mask", False), pool="argmax",
                      eot_id=vocab - 1, head_bias=False, rules=rules)
    return vision, text


def read_open_clip(source: str | os.PathLike[str]) -> ImageTextModel:
    """An ``ImageTextModel`` from an open_clip CLIP checkpoint folder: open_clip_config.json and the weights
    (open_clip_model.safetensors). A tokenizer.json there (CLIP's BPE) is read as the model's tokenizer."""
    ckpt = read_checkpoint(source)
    where = str(ckpt.path)
    model_cfg = (ckpt.extra.get(OPEN_CLIP_CONFIG) or {}).get("model_cfg")
    if not isinstance(model_cfg, dict) or "embed_dim" not in model_cfg:
        raise CheckpointError(f"{where} is not an open_clip folder: expected {OPEN_CLIP_CONFIG} with a model_cfg "
                              "(embed_dim, vision_cfg, text_cfg) next to the weights.")
    vision, text = open_clip_configs(model_cfg, where)
    model = ImageTextModel(vision=vision, text=text, scoring="sigmoid" if "init_logit_bias" in model_cfg
                           else "softmax")
    if (ckpt.path / text.rules.file).is_file():
        attach_tokenizer(model, ckpt.path)
    out = remap(ckpt.tensors, OPEN_CLIP_RULES, num_heads=vision.num_heads, source=where)
    _load_state(model, _fix_shapes(out.tensors), where)
    return model.eval()
