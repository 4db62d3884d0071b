"""Write src/vitkit/zoo_table.py: the registry entries of timm's DINOv3, EVA-02, Perception Encoder, CLIP, AIMv2,
DINOv2-L/g, FlexiViT and SigLIP (2) image towers, read off timm's own model definitions and pretrained configs.

Run from the repository root with the test environment (timm installed): ``.venv/bin/python scripts/gen_zoo.py``.
Each timm model function is called with its builder replaced by one that records the keyword arguments, which
are translated to ViTConfig fields; tests/test_zoo.py checks every entry against timm (parameter counts,
preprocessing, numerics).
"""

from __future__ import annotations

import fnmatch
import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _refs import import_timm  # noqa: E402

timm = import_timm()
import timm.models.eva as eva  # noqa: E402
import timm.models.vision_transformer as vt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from vitkit.config import PretrainedCfg, ViTConfig  # noqa: E402
from vitkit.errors import ConfigError  # noqa: E402

FAMILIES = [  # (tag, patterns, excluded patterns)
    ("dinov3", ["vit_*_dinov3*"], []),
    ("eva02", ["eva02_*"], ["eva02_enormous_*"]),  # the enormous one has post-norm blocks
    ("pe", ["vit_pe_*"], []),
    ("clip", ["vit_*_clip_*"], []),
    ("aimv2", ["aimv2_*"], []),
    ("dinov2", ["vit_large_patch14_*dinov2", "vit_giant_patch14_*dinov2"], []),
    ("flexivit", ["flexivit_*"], []),
    ("siglip", ["vit_*_siglip_*"], ["*siglip2*"]),
]
ALREADY = {"vit_base_patch16_siglip_224", "vit_base_patch16_siglip_256", "vit_base_patch16_siglip_384",
           "vit_so400m_patch14_siglip_224"}
DEFAULTS = ViTConfig().to_dict()
PCFG_DEFAULTS = PretrainedCfg().to_dict()


class CapturedError(Exception):
    def __init__(self, kind: str, kwargs: dict) -> None:
        super().__init__(kind)
        self.kind, self.kwargs = kind, kwargs


def _capture(kind: str):
    def fn(variant, pretrained=False, **kwargs):
        raise CapturedError(kind, kwargs)
    return fn


def _norm(layer) -> tuple[str, float]:
    if layer is None:
        return "layernorm", 1e-6
    if isinstance(layer, functools.partial):
        name = layer.func.__name__.lower()
        eps = layer.keywords.get("eps", 1e-6)
    else:
        name, eps = layer.__name__.lower(), 1e-6
    return ("rmsnorm" if "rms" in name else "layernorm"), eps


def _act(act) -> str:
    if act is None:
        return "gelu"
    if isinstance(act, str):
        return {"gelu": "gelu", "quick_gelu": "quick_gelu", "silu": "silu", "gelu_tanh": "gelu_tanh"}[act]
    return {nn.SiLU: "silu", nn.GELU: "gelu"}[act]


def from_vit(kw: dict) -> dict:
    kw = dict(kw)
    out = {k: kw.pop(k) for k in ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio",
                                  "qkv_bias", "qk_norm", "proj_bias", "init_values", "class_token",
                                  "no_embed_class", "reg_tokens", "pre_norm", "final_norm", "fc_norm",
                                  "global_pool") if k in kw}
    out["norm_layer"], out["norm_eps"] = _norm(kw.pop("norm_layer", None))
    out["act_layer"] = _act(kw.pop("act_layer", None))
    if kw.pop("embed_norm_layer", None) is not None:
        out["patch_norm"] = True
    mlp = kw.pop("mlp_layer", None)
    if mlp is not None:
        name = getattr(mlp, "func", mlp).__name__
        if name == "GluMlp":  # packed: timm's ratio counts both halves
            out["mlp_layer"], out["mlp_ratio"] = "swiglu_packed", out.get("mlp_ratio", 4.0) / 2
        else:
            out["mlp_layer"] = {"SwiGLU": "swiglu"}[name]
    kw.pop("dynamic_img_size", None)
    if kw:
        raise ValueError(f"untranslated timm ViT arguments: {sorted(kw)}")
    return out


def _eva_norms(kw: dict, out: dict) -> None:
    pool = kw.pop("global_pool", "avg")
    out["global_pool"] = pool or "none"
    fc = kw.pop("use_fc_norm", None)
    fc = pool == "avg" if fc is None else fc
    post = kw.pop("use_post_transformer_norm", None)
    post = (not fc) if post is None else post
    if fc and post:
        raise ValueError("both a final norm and an fc norm")
    out["final_norm"], out["fc_norm"] = fc or post, fc


def _eva_rope(kw: dict, out: dict) -> None:
    if not kw.pop("use_rot_pos_emb", False):
        return
    rope = kw.pop("rope_type", "cat")
    out["rope"] = {"cat": "eva", "dinov3": "dinov3"}[rope]
    out["rope_temperature"] = float(kw.pop("rope_temperature", 100.0 if rope == "dinov3" else 10000.0))
    out["rope_grid_offset"] = float(kw.pop("rope_grid_offset", 0.0))
    out["rope_grid_indexing"] = kw.pop("rope_grid_indexing", "ij")
    out["rope_rotate_half"] = bool(kw.pop("rope_rotate_half", False))
    ref = kw.pop("ref_feat_shape", None)
    if ref is not None and rope == "cat":
        out["rope_ref_grid"] = list(ref)


def from_eva(kw: dict) -> dict:
    kw = dict(kw)
    out = {k: kw.pop(k) for k in ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio",
                                  "qkv_bias", "init_values", "class_token", "no_embed_class") if k in kw}
    out.setdefault("qkv_bias", True)
    out["norm_layer"], out["norm_eps"] = _norm(kw.pop("norm_layer", None))
    out["reg_tokens"] = kw.pop("num_reg_tokens", 0)
    attn_type = kw.pop("attn_type", "eva")
    out["qkv_fused"] = kw.pop("qkv_fused", True)
    if attn_type == "eva" and out["qkv_bias"]:
        out["k_bias"] = False
    out["attn_norm"] = kw.pop("scale_attn_inner", False)
    if kw.pop("swiglu_mlp", False):
        align, norm = kw.pop("swiglu_align_to", 0), kw.pop("scale_mlp", False)
        out["mlp_layer"] = "swiglu" if (align or norm) else "swiglu_packed"
        out["mlp_align"], out["mlp_norm"] = align, norm
    else:
        out["mlp_norm"] = kw.pop("scale_mlp", False)
    if not kw.pop("use_abs_pos_emb", True):
        out["posemb"] = "none"
    out["pre_norm"] = kw.pop("use_pre_transformer_norm", False)
    _eva_norms(kw, out)
    _eva_rope(kw, out)
    if "attn_pool_num_heads" in kw:
        out["attn_pool_heads"] = kw.pop("attn_pool_num_heads")
    if "attn_pool_mlp_ratio" in kw:
        out["attn_pool_mlp_ratio"] = kw.pop("attn_pool_mlp_ratio")
    kw.pop("dynamic_img_size", None)
    if kw:
        raise ValueError(f"untranslated timm Eva arguments: {sorted(kw)}")
    return out


def capture(name: str) -> tuple[str, dict]:
    originals = eva._create_eva, vt._create_vision_transformer
    eva._create_eva, vt._create_vision_transformer = _capture("eva"), _capture("vit")
    try:
        timm.models._registry.model_entrypoint(name)()
    except CapturedError as c:
        return c.kind, c.kwargs
    finally:
        eva._create_eva, vt._create_vision_transformer = originals
    raise RuntimeError(name)


def entry(name: str, family: str) -> tuple:
    kind, kw = capture(name)
    cfg = from_eva(kw) if kind == "eva" else from_vit(kw)
    pcfg = timm.models.get_pretrained_cfg(name)
    size = tuple(pcfg.input_size)
    with torch.device("meta"):  # the size timm builds it at (its pretrained config's, for most)
        ref = timm.create_model(name, pretrained=False)
    built, count = tuple(ref.patch_embed.img_size), sum(t.numel() for t in ref.parameters())
    cfg["img_size"] = list(size[1:] if cfg.get("posemb") == "none" else built)
    cfg["num_classes"] = pcfg.num_classes
    cfg = ViTConfig.from_dict(cfg).to_dict()  # validated, normalised
    config = {k: v for k, v in cfg.items() if v != DEFAULTS[k]}
    p = dict(input_size=size, mean=tuple(pcfg.mean), std=tuple(pcfg.std), crop_pct=pcfg.crop_pct,
             crop_mode=pcfg.crop_mode if pcfg.crop_mode in ("center", "squash") else "center",
             interpolation=pcfg.interpolation, num_classes=pcfg.num_classes,
             label_names="imagenet-1k" if pcfg.num_classes == 1000 else None, timm_name=name, tag=pcfg.tag)
    if pcfg.hf_hub_id and pcfg.hf_hub_id != f"timm/{name}.{pcfg.tag}":  # weights shared with another name
        p["hf_hub_id"] = pcfg.hf_hub_id
    p = {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()}
    p = {k: v for k, v in p.items() if v != PCFG_DEFAULTS[k]}
    return name, family, count, config, p


def main() -> None:
    names = timm.list_models()
    rows = []
    for family, patterns, excluded in FAMILIES:
        for name in names:
            if name in ALREADY or not any(fnmatch.fnmatch(name, p) for p in patterns):
                continue
            if any(fnmatch.fnmatch(name, p) for p in excluded) or any(r[0] == name for r in rows):
                continue
            try:
                rows.append(entry(name, family))
            except ConfigError as e:  # e.g. 384 pixels on 14-pixel patches: timm drops the remainder
                print(f"skipped {name}: {e}")
    body = "[\n" + "".join(f"    {row!r},\n" for row in rows) + "]"  # one row a line (ruff: E501 waived here)
    text = (f'"""Registry entries of today\'s ViT families (written by scripts/gen_zoo.py from timm '
            f'{timm.__version__}; do not edit by hand).\n\nEach row: (name, family, timm\'s parameter count, '
            f'ViTConfig fields that differ from the\ndefaults, PretrainedCfg fields that differ from the defaults).\n'
            f'"""\n\nROWS = {body}\n')
    Path("src/vitkit/zoo_table.py").write_text(text)
    print(f"{len(rows)} entries")


if __name__ == "__main__":
    main()
