"""Google's JAX/Flax checkpoints (.npz): the original vision_transformer repo and big_vision.

Both name tensors by Flax module paths. They differ in block sub-indices (original: attention _1,
second norm _2, MLP _3; big_vision: _0, _1, _0), in where the position embedding lives (original:
``Transformer/posembed_input/pos_embedding``, covering the class token; big_vision: ``pos_embedding``,
patches only), and big_vision may stack all blocks in one ``encoderblock`` with a leading layer axis
("scanned"). Kernels are (in, out); attention kernels keep heads apart: (D, heads, head_dim).
An .npz holds arrays only: preprocessing, class names and whether a head is multi-label are not kept.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import CheckpointError
from .formats import Family
from .mapping import Rule, params, remap
from .numerics import GOOGLE
from .readers import Checkpoint, TensorView, tensor_info
from .writers import write_npz

if TYPE_CHECKING:
    from ..model import VisionTransformer

_SCANNED = re.compile(r"Transformer/encoderblock/(.+)\Z")


def _dense(src: str, dst: str, kernel: str = "T", bias: str = "id") -> list[Rule]:
    return params(src, dst, kernel, bias, src_names=("kernel", "bias"), sep="/")


def _norm(src: str, dst: str) -> list[Rule]:
    return params(src, dst, src_names=("scale", "bias"), sep="/")


def _attention(src: str, q: str, k: str, v: str, out: str) -> list[Rule]:
    """Flax MultiHeadDotProductAttention: query/key/value kernels (D, heads, head_dim), out (heads, head_dim, D)."""
    rows = [row for name, dst in (("query", q), ("key", k), ("value", v))
            for row in _dense(f"{src}/{name}", dst, "heads_in", "heads_bias")]
    return rows + _dense(f"{src}/out", out, "heads_out")


def google_rules(*, mha: int, ln2: int, mlp: int, posemb: str) -> list[Rule]:
    """The table of one layout, given its block sub-indices and position-embedding name."""
    block = "Transformer/encoderblock_{}/"
    return [
        *params("embedding", "patch_embed.proj", "conv", src_names=("kernel", "bias"), sep="/"),
        ("cls", "cls_token", "id"),
        (posemb, "pos_embed", "id"),
        *_norm(block + "LayerNorm_0", "blocks.{}.norm1"),
        *_attention(f"{block}MultiHeadDotProductAttention_{mha}", "blocks.{}.attn.qkv#q", "blocks.{}.attn.qkv#k",
                    "blocks.{}.attn.qkv#v", "blocks.{}.attn.proj"),
        *_norm(f"{block}LayerNorm_{ln2}", "blocks.{}.norm2"),
        *_dense(f"{block}MlpBlock_{mlp}/Dense_0", "blocks.{}.mlp.fc1"),
        *_dense(f"{block}MlpBlock_{mlp}/Dense_1", "blocks.{}.mlp.fc2"),
        *_norm("Transformer/encoder_norm", "norm"),
        *_dense("pre_logits", "pre_logits.fc"),
        *_dense("head", "head"),
        ("MAPHead_0/probe", "attn_pool.latent", "id"),
        *_attention("MAPHead_0/MultiHeadDotProductAttention_0", "attn_pool.q", "attn_pool.kv#k", "attn_pool.kv#v",
                    "attn_pool.proj"),
        *_norm("MAPHead_0/LayerNorm_0", "attn_pool.norm"),
        *_dense("MAPHead_0/MlpBlock_0/Dense_0", "attn_pool.mlp.fc1"),
        *_dense("MAPHead_0/MlpBlock_0/Dense_1", "attn_pool.mlp.fc2"),
    ]


ORIGINAL = google_rules(mha=1, ln2=2, mlp=3, posemb="Transformer/posembed_input/pos_embedding")
BIG_VISION = google_rules(mha=0, ln2=1, mlp=0, posemb="pos_embedding")
# the other towers of a big_vision SigLIP checkpoint (text encoder, temperature t, bias b)
DROPPED: list[Rule] = [("txt/*", None, "id"), ("t", None, "id"), ("b", None, "id")]
READ_RULES = tuple(dict.fromkeys([*ORIGINAL, *BIG_VISION, *DROPPED]))


class Unscanned(TensorView):
    """Scanned blocks (``Transformer/encoderblock/X`` with a leading layer axis) as ``encoderblock_{i}/X``."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        self._tensors = tensors
        self._names: dict[str, tuple[str, int | None]] = {}
        self._cache: tuple[str, torch.Tensor] | None = None  # the last stacked array read, for its other layers
        for key in tensors:
            m = _SCANNED.match(key)
            if m is None:
                self._names[key] = (key, None)
                continue
            for i in range(self._depth(key)):
                self._names[f"Transformer/encoderblock_{i}/{m.group(1)}"] = (key, i)

    def _depth(self, key: str) -> int:
        return tensor_info(self._tensors, key)[0][0]

    def header(self, key: str) -> tuple[tuple[int, ...], str]:
        source, index = self._names[key]
        shape, dtype = tensor_info(self._tensors, source)
        return (shape if index is None else shape[1:]), dtype

    def _stacked(self, key: str) -> torch.Tensor:
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._tensors[key])
        return self._cache[1]

    def __getitem__(self, key: str) -> torch.Tensor:
        source, index = self._names[key]
        return self._tensors[source] if index is None else self._stacked(source)[index]


def _prepare(tensors: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    return Unscanned(tensors) if any(_SCANNED.match(k) for k in tensors) else tensors


def _hints(ckpt: Checkpoint, tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    query = next((k for k in tensors if re.search(r"encoderblock_0/MultiHeadDotProductAttention_\d/query/kernel$", k)),
                 None)
    if query is None:
        raise CheckpointError(f"{ckpt.path} has an embedding/kernel but no Transformer/encoderblock_0/"
                              "MultiHeadDotProductAttention_*/query/kernel: not a ViT checkpoint vitkit knows.")
    # Whether position embeddings cover the class token (original) or not (big_vision) is read off their
    # length by infer_config, since timm-converted files mix the two. The numerics are Google's Flax code's:
    # flax.linen.gelu (tanh approximation by default) and scipy.ndimage.zoom(order=1) to resize position
    # embeddings (timm runs these files with exact GELU and bilinear without aligned corners: GOOGLE.timm_runs_with).
    return {"num_heads": tensor_info(tensors, query)[0][1],  # (D, heads, head_dim)
            "act_layer": "gelu_tanh", "posemb_resample": "google"}


def write(model: VisionTransformer, path: Path) -> Path:
    """An .npz in the original layout (big_vision's when position embeddings skip the class token).

    ``path`` is the file; without an .npz suffix it is a folder that gets ``model.npz``.
    """
    c = model.config
    problems = [why for test, why in (
        (c.global_pool == "token_avg", "a head over the class and the mean patch token side by side "
                                       "(global_pool='token_avg')"),
        (c.norm_layer != "layernorm" or not (c.qkv_bias and c.k_bias and c.proj_bias) or c.patch_bias is False,
         "RMSNorm or layers without bias (Flax's are LayerNorms and Dense layers with biases)"),
        (c.rope != "none", f"rotary position embeddings (rope={c.rope!r})"),
        (c.mlp_layer != "mlp" or c.mlp_norm or c.qk_norm or c.attn_norm or c.pre_norm or c.patch_norm,
         "a gated MLP, a pre-norm or a norm inside the blocks")) if test]
    if problems:
        raise CheckpointError(f"Cannot save this model as a Google .npz: it has {'; '.join(problems)}, which the "
                              "format cannot say. Save it in the 'vitkit' or 'timm' format instead.")
    rules = BIG_VISION if c.no_embed_class and c.class_token else ORIGINAL
    out = remap(model.state_dict(), rules, reverse=True, num_heads=c.num_heads)
    if out.unmatched:
        raise CheckpointError(f"Cannot save this model as a Google .npz: the format has no place for "
                              f"{', '.join(out.unmatched)}. Save it in the 'vitkit' or 'timm' format instead.")
    return write_npz(out.tensors, path if path.suffix == ".npz" else path / "model.npz")


FAMILY = Family(
    name="npz",
    description="Google vision_transformer / big_vision .npz: embedding/kernel, "
                "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel, ...",
    signatures=(r"(^|/)embedding/kernel$",),
    rules=READ_RULES,
    numerics=GOOGLE,
    prefixes=("params/img/", "opt/target/", "params/"),
    hints=_hints,
    prepare=_prepare,
    write=write,
)
