"""Reference checkpoints for the weights tests, made from randomly initialised timm models, and a check
that the hand-written Google .npz writer below is what timm's own npz loader reads.

The npz writer here is deliberately independent of vitkit's (it mirrors timm's ``_load_weights``), so
vitkit's reader is tested against a file vitkit did not write.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

TINY = dict(img_size=32, patch_size=8, embed_dim=128, depth=2, num_heads=2, num_classes=5)
TOL = 1e-5


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter random values (biases and norms too, so a mapping error cannot hide)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * 0.1
            is_scale = p.ndim == 1 and name.endswith("weight") and "norm" in name.lower()
            p.copy_(noise + 1.0 if is_scale else noise)
    return model.eval()


def timm_vit(timm, seed: int = 0, **kwargs) -> torch.nn.Module:
    """A tiny random timm VisionTransformer (kwargs override TINY)."""
    from timm.models.vision_transformer import VisionTransformer

    return randomize(VisionTransformer(**{**TINY, "weight_init": "skip", **kwargs}), seed)


def timm_from_file(timm, path: Path, **kwargs) -> torch.nn.Module:
    """A model built and loaded by timm's own pretrained pipeline (filter, resampling, in_chans adaptation)."""
    kwargs = {**TINY, **kwargs}
    overlay = dict(file=str(path), num_classes=kwargs["num_classes"])
    return timm.create_model("vit_base_patch16_224", pretrained=True, pretrained_cfg_overlay=overlay, **kwargs).eval()


def images(n: int = 2, size: int = 32, chans: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, chans, size, size, generator=torch.Generator().manual_seed(seed))


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a.detach() - b.detach()).abs().max())


# ---------------------------------------------------------------------- Google npz, written by hand
def _heads_in(w: np.ndarray, heads: int) -> np.ndarray:
    return w.T.reshape(w.shape[1], heads, -1)  # Linear (out, in) -> Flax kernel (in, heads, head_dim)


def _attention(sd: dict, src: str, dst: str, heads: int, q: str | None = None) -> dict[str, np.ndarray]:
    """Flax MultiHeadDotProductAttention arrays from timm's fused qkv (or q + kv of the MAP head)."""
    if q is None:
        ws, bs = np.split(sd[f"{src}.qkv.weight"], 3), np.split(sd[f"{src}.qkv.bias"], 3)
    else:
        kw, kb = np.split(sd[f"{src}.kv.weight"], 2), np.split(sd[f"{src}.kv.bias"], 2)
        ws, bs = [sd[f"{src}.q.weight"], *kw], [sd[f"{src}.q.bias"], *kb]
    out = {}
    for name, w, b in zip(("query", "key", "value"), ws, bs):
        out[f"{dst}{name}/kernel"] = _heads_in(w, heads)
        out[f"{dst}{name}/bias"] = b.reshape(heads, -1)
    proj = sd[f"{src}.proj.weight"]
    out[f"{dst}out/kernel"] = proj.T.reshape(heads, -1, proj.shape[0])  # (in, out) -> (heads, head_dim, D)
    out[f"{dst}out/bias"] = sd[f"{src}.proj.bias"]
    return out


def _ln(sd: dict, src: str, dst: str) -> dict[str, np.ndarray]:
    return {f"{dst}scale": sd[f"{src}.weight"], f"{dst}bias": sd[f"{src}.bias"]}


def _dense(sd: dict, src: str, dst: str) -> dict[str, np.ndarray]:
    return {f"{dst}kernel": sd[f"{src}.weight"].T, f"{dst}bias": sd[f"{src}.bias"]}


def google_arrays(model: torch.nn.Module, *, big_vision: bool = False, scanned: bool = False) -> dict[str, np.ndarray]:
    """A timm ViT's weights under Google's names (the inverse of timm's ``_load_weights``)."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    heads = model.blocks[0].attn.num_heads
    mha, ln2, mlp = (0, 1, 0) if big_vision or scanned else (1, 2, 3)
    out = {"embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
           "embedding/bias": sd["patch_embed.proj.bias"],
           ("pos_embedding" if big_vision or scanned else "Transformer/posembed_input/pos_embedding"): sd["pos_embed"],
           **_ln(sd, "norm", "Transformer/encoder_norm/")}
    if "cls_token" in sd:
        out["cls"] = sd["cls_token"]
    if "head.weight" in sd:
        out.update(_dense(sd, "head", "head/"))
    if "attn_pool.latent" in sd:
        out.update({"MAPHead_0/probe": sd["attn_pool.latent"], **_ln(sd, "attn_pool.norm", "MAPHead_0/LayerNorm_0/"),
                    **_attention(sd, "attn_pool", "MAPHead_0/MultiHeadDotProductAttention_0/", heads, q="q"),
                    **_dense(sd, "attn_pool.mlp.fc1", "MAPHead_0/MlpBlock_0/Dense_0/"),
                    **_dense(sd, "attn_pool.mlp.fc2", "MAPHead_0/MlpBlock_0/Dense_1/")})
    blocks = []
    for i in range(len(model.blocks)):
        b = f"blocks.{i}"
        blocks.append({**_ln(sd, f"{b}.norm1", "LayerNorm_0/"), **_ln(sd, f"{b}.norm2", f"LayerNorm_{ln2}/"),
                       **_attention(sd, f"{b}.attn", f"MultiHeadDotProductAttention_{mha}/", heads),
                       **_dense(sd, f"{b}.mlp.fc1", f"MlpBlock_{mlp}/Dense_0/"),
                       **_dense(sd, f"{b}.mlp.fc2", f"MlpBlock_{mlp}/Dense_1/")})
    if scanned:  # one stacked array per name, leading axis = layer
        out.update({f"Transformer/encoderblock/{k}": np.stack([blk[k] for blk in blocks]) for k in blocks[0]})
    else:
        out.update({f"Transformer/encoderblock_{i}/{k}": v for i, blk in enumerate(blocks) for k, v in blk.items()})
    return out


def write_google_npz(model: torch.nn.Module, path: Path, *, prefix: str = "", **layout) -> Path:
    np.savez(path, **{prefix + k: v for k, v in google_arrays(model, **layout).items()})
    return path


def timm_from_npz(timm, path: Path, seed: int = 99, **kwargs) -> torch.nn.Module:
    """A timm model (random init, other seed) loaded by timm's own Google-npz loader."""
    from timm.models.vision_transformer import _load_weights

    model = timm_vit(timm, seed=seed, **kwargs)
    _load_weights(model, str(path))
    return model.eval()


# ---------------------------------------------------------------------- the helper is what timm reads
@pytest.mark.parametrize("layout", [dict(), dict(big_vision=True), dict(scanned=True)], ids=["orig", "bv", "scan"])
def test_google_npz_helper_matches_timm_loader(timm, tmp_path, layout):
    ref = timm_vit(timm)
    path = write_google_npz(ref, tmp_path / "w.npz", **layout)
    loaded = timm_from_npz(timm, path)
    x = images()
    assert max_diff(loaded(x), ref(x)) == 0.0


def test_google_npz_helper_map_head(timm, tmp_path):
    ref = timm_vit(timm, class_token=False, global_pool="map", num_classes=0)
    path = write_google_npz(ref, tmp_path / "w.npz", big_vision=True)
    loaded = timm_from_npz(timm, path, class_token=False, global_pool="map", num_classes=0)
    x = images()
    assert max_diff(loaded(x), ref(x)) == 0.0
