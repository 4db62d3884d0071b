"""Building blocks of a Vision Transformer. Parameter names follow timm's ViT."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .rope import apply_rope


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x), the activation of OpenAI's CLIP."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def get_act_layer(name: str) -> Callable[[], nn.Module]:
    return {
        "gelu": nn.GELU,
        "gelu_tanh": partial(nn.GELU, approximate="tanh"),
        "quick_gelu": QuickGELU,
        "relu": nn.ReLU,
        "silu": nn.SiLU,
    }[name]


def get_norm_layer(name: str, eps: float) -> Callable[[int], nn.Module]:
    layer = {"layernorm": nn.LayerNorm, "rmsnorm": nn.RMSNorm}[name]
    return partial(layer, eps=eps)


class PatchEmbed(nn.Module):
    """Image to patch tokens: a strided convolution, optionally normalised (AIMv2's RMSNorm).
    (B, C, H, W) -> (B, D, H/p, W/p)."""

    def __init__(self, *, patch_size: tuple[int, int], in_chans: int, embed_dim: int, bias: bool = True,
                 norm_layer: Callable[[int], nn.Module] | None = None) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=bias)
        self.norm = norm_layer(embed_dim) if norm_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        if isinstance(self.norm, nn.Identity):
            return x
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # norm over channels, NCHW kept


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample while training."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)  # scale the (B, 1, ...) mask, not the whole activation

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


@dataclass(frozen=True)
class BlockSpec:
    """What one transformer block is built of (read off a ViTConfig by the model)."""

    num_heads: int
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    qk_scale: float | None = None
    qk_norm: bool = False
    proj_bias: bool = True
    qkv_fused: bool = True  # one qkv projection, else q_proj, k_proj, v_proj
    k_bias: bool = True  # False: q and v have biases, k has none (EVA's attention)
    attn_norm: bool = False  # a norm of the attention output before its projection (EVA-CLIP)
    mlp_layer: str = "mlp"  # 'mlp', 'swiglu' (fc1_g, fc1_x) or 'swiglu_packed' (one fc1: gate, then value)
    mlp_norm: bool = False  # a norm of the MLP's hidden activations (EVA-02's SwiGLU)
    mlp_align: int = 0  # round the SwiGLU width up to a multiple of this (DINOv3)
    mlp_bias: bool = True
    drop: float = 0.0
    attn_drop: float = 0.0
    init_values: float | None = None
    rotate_half: bool = False  # rotary layout ('half' or interleaved), when a table is given
    num_prefix_tokens: int = 0  # tokens before the patches, not rotated
    causal: bool = False  # each token attends to itself and the tokens before it only (CLIP's text tower)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax over the last axis of attention scores, where ``mask`` (bool, broadcastable) is False giving 0."""
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1)


class Attention(nn.Module):
    """Multi-head self-attention, fused (``qkv``) or separate (``q_proj``, ``k_proj``, ``v_proj``) projections,
    with rotary position embeddings applied to the patch tokens' queries and keys when a table is given.

    The fused kernel (``scaled_dot_product_attention``) runs unless attention weights are asked for
    (``return_attn=True``); then the explicit path computes and returns them. ``causal``: each token attends
    to itself and the tokens before it only (CLIP's text tower).
    """

    def __init__(self, dim: int, *, spec: BlockSpec, norm_layer: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.num_heads = spec.num_heads
        self.head_dim = dim // spec.num_heads
        self.scale = spec.qk_scale if spec.qk_scale is not None else self.head_dim ** -0.5
        self.rotate_half, self.num_prefix_tokens = spec.rotate_half, spec.num_prefix_tokens
        self.causal = spec.causal
        separate_bias = spec.qkv_bias and not spec.k_bias
        if spec.qkv_fused:
            self.qkv = nn.Linear(dim, dim * 3, bias=spec.qkv_bias and not separate_bias)
            if separate_bias:  # q and v biases; k's is a fixed zero
                self.q_bias = nn.Parameter(torch.zeros(dim))
                self.register_buffer("k_bias", torch.zeros(dim), persistent=False)
                self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_proj = nn.Linear(dim, dim, bias=spec.qkv_bias)
            self.k_proj = nn.Linear(dim, dim, bias=spec.qkv_bias and spec.k_bias)
            self.v_proj = nn.Linear(dim, dim, bias=spec.qkv_bias)
        self.q_norm = norm_layer(self.head_dim) if spec.qk_norm else nn.Identity()
        self.k_norm = norm_layer(self.head_dim) if spec.qk_norm else nn.Identity()
        self.attn_drop = nn.Dropout(spec.attn_drop)
        self.norm = norm_layer(dim) if spec.attn_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=spec.proj_bias)
        self.proj_drop = nn.Dropout(spec.drop)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, N, C) -> q, k, v, each (B, heads, N, head_dim)."""
        B, N, C = x.shape
        if not hasattr(self, "qkv"):
            return tuple(proj(x).reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)
                         for proj in (self.q_proj, self.k_proj, self.v_proj))  # type: ignore[return-value]
        if hasattr(self, "q_bias"):
            qkv = F.linear(x, self.qkv.weight, torch.cat((self.q_bias, self.k_bias, self.v_bias)))
        else:
            qkv = self.qkv(x)
        # (B, N, 3C) -> (3, B, heads, N, head_dim)
        q, k, v = qkv.reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v

    def forward(self, x: torch.Tensor, rope: torch.Tensor | None = None, return_attn: bool = False,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``rope``: a rotary table (N, 2 * head_dim), or (B, 1, N, 2 * head_dim) per image. ``attn_mask``: which
        keys each query may attend to, bool, broadcastable to (B, heads, N, N) (True: attend); None: all."""
        B, N, C = x.shape
        q, k, v = self._qkv(x)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q = apply_rope(q, rope, rotate_half=self.rotate_half, num_prefix_tokens=self.num_prefix_tokens)
            k = apply_rope(k, rope, rotate_half=self.rotate_half, num_prefix_tokens=self.num_prefix_tokens)
        attn = None
        if return_attn:
            scores = (q * self.scale) @ k.transpose(-2, -1)  # (B, heads, N, N)
            if self.causal:
                scores = scores.masked_fill(torch.ones(N, N, dtype=torch.bool, device=x.device).triu(1), -math.inf)
            attn = masked_softmax(scores, attn_mask)
            x = self.attn_drop(attn) @ v
        else:
            if self.causal and attn_mask is not None:  # both: one boolean mask (SDPA takes one or the other)
                attn_mask = attn_mask & torch.ones(N, N, dtype=torch.bool, device=x.device).tril()
            x = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=self.attn_drop.p if self.training else 0.0, scale=self.scale,
                is_causal=self.causal and attn_mask is None)
        x = x.transpose(1, 2).reshape(B, N, C)  # (B, heads, N, head_dim) -> (B, N, C)
        x = self.proj_drop(self.proj(self.norm(x)))
        return (x, attn) if return_attn else x


class Mlp(nn.Module):
    """fc1, activation, (norm), fc2."""

    def __init__(self, dim: int, hidden: int, *, act_layer: Callable[[], nn.Module], drop: float = 0.0,
                 bias: bool = True, norm_layer: Callable[[int], nn.Module] | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self._add_output(dim, hidden, act_layer=act_layer, drop=drop, bias=bias, norm_layer=norm_layer)

    def _add_output(self, dim: int, hidden: int, *, act_layer: Callable[[], nn.Module], drop: float, bias: bool,
                    norm_layer: Callable[[int], nn.Module] | None) -> None:
        """The layers after the input projection, shared by every MLP here: activation, dropout, (norm), fc2."""
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.norm = norm_layer(hidden) if norm_layer is not None else nn.Identity()
        self.fc2 = nn.Linear(hidden, dim, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def _output(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.norm(self.drop1(hidden))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._output(self.act(self.fc1(x)))


class SwiGLU(Mlp):
    """silu(fc1_g(x)) * fc1_x(x), (norm), fc2: the gated MLP of EVA-02, AIMv2 and DINOv3 (separate weights).

    ``align`` rounds the hidden width up to a multiple of it (DINOv3's 8 or 64).
    """

    def __init__(self, dim: int, hidden: int, *, act_layer: Callable[[], nn.Module], drop: float = 0.0,
                 bias: bool = True, norm_layer: Callable[[int], nn.Module] | None = None, align: int = 0) -> None:
        nn.Module.__init__(self)  # its own input projections instead of Mlp's fc1
        if align:
            hidden += -hidden % align
        self.fc1_g = nn.Linear(dim, hidden, bias=bias)
        self.fc1_x = nn.Linear(dim, hidden, bias=bias)
        self._add_output(dim, hidden, act_layer=act_layer, drop=drop, bias=bias, norm_layer=norm_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._output(self.act(self.fc1_g(x)) * self.fc1_x(x))


class SwiGLUPacked(Mlp):
    """SwiGLU with one fc1 of twice the hidden width: silu(first half) * second half (DINOv2-g, EVA-02-Ti/S)."""

    def __init__(self, dim: int, hidden: int, *, act_layer: Callable[[], nn.Module], drop: float = 0.0,
                 bias: bool = True, norm_layer: Callable[[int], nn.Module] | None = None) -> None:
        super().__init__(dim, hidden, act_layer=act_layer, drop=drop, bias=bias, norm_layer=norm_layer)
        self.fc1 = nn.Linear(dim, 2 * hidden, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.fc1(x).chunk(2, dim=-1)
        return self._output(self.act(gate) * value)


MLP_LAYERS = {"mlp": Mlp, "swiglu": SwiGLU, "swiglu_packed": SwiGLUPacked}


def make_mlp(dim: int, spec: BlockSpec, *, norm_layer: Callable[[int], nn.Module],
             act_layer: Callable[[], nn.Module]) -> nn.Module:
    """The MLP a block spec names, of hidden width ``int(dim * mlp_ratio)`` (SwiGLU: the gated width)."""
    hidden = int(dim * spec.mlp_ratio)
    kwargs: dict = dict(act_layer=nn.SiLU if spec.mlp_layer != "mlp" else act_layer, drop=spec.drop,
                        bias=spec.mlp_bias, norm_layer=norm_layer if spec.mlp_norm else None)
    if spec.mlp_layer == "swiglu":
        kwargs["align"] = spec.mlp_align
    return MLP_LAYERS[spec.mlp_layer](dim, hidden, **kwargs)


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, *, spec: BlockSpec, drop_path: float, norm_layer: Callable[[int], nn.Module],
                 act_layer: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, spec=spec, norm_layer=norm_layer)
        self.ls1 = LayerScale(dim, spec.init_values) if spec.init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = make_mlp(dim, spec, norm_layer=norm_layer, act_layer=act_layer)
        self.ls2 = LayerScale(dim, spec.init_values) if spec.init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, rope: torch.Tensor | None = None, return_attn: bool = False,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if return_attn:
            y, attn = self.attn(self.norm1(x), rope, return_attn=True, attn_mask=attn_mask)
        else:
            y, attn = self.attn(self.norm1(x), rope, attn_mask=attn_mask), None
        x = x + self.drop_path1(self.ls1(y))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return (x, attn) if return_attn else x


class AttentionPoolHead(nn.Module):
    """Multihead attention pooling (MAP, as in SigLIP and Perception Encoder): one learned query attends over
    the tokens.

    Names follow timm's ``AttentionPoolLatent``: latent, q, kv, proj, norm, mlp.
    """

    def __init__(self, dim: int, *, num_heads: int, mlp_ratio: float, qkv_bias: bool,
                 norm_layer: Callable[[int], nn.Module], act_layer: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.latent = nn.Parameter(torch.zeros(1, 1, dim))
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.norm = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer)

    def forward(self, x: torch.Tensor, return_attn: bool = False, attn_mask: torch.Tensor | None = None
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Pool tokens (B, N, C) to (B, C); with ``return_attn`` also the query's weights (B, heads, 1, N),
        computed explicitly (the fused kernel does not expose them). ``attn_mask``: (B, 1, 1, N) bool, the
        tokens the query may read (True), e.g. not padding."""
        B, N, C = x.shape
        # (1, 1, C) -> (B, heads, 1, head_dim)
        q = self.q(self.latent.expand(B, -1, -1)).reshape(B, 1, self.num_heads, self.head_dim).transpose(1, 2)
        # (B, N, 2C) -> (2, B, heads, N, head_dim)
        k, v = self.kv(x).reshape(B, N, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if return_attn:
            attn = masked_softmax((q * self.scale) @ k.transpose(-2, -1), attn_mask)  # (B, heads, 1, N)
            x = attn @ v
        else:
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scale)
        x = self.proj(x.transpose(1, 2).reshape(B, 1, C))  # (B, heads, 1, head_dim) -> (B, 1, C)
        x = x + self.mlp(self.norm(x))
        return (x[:, 0], attn) if return_attn else x[:, 0]


PREFIX_TOKENS = ("cls_token", "dist_token", "reg_token")


@torch.no_grad()
def init_parameter(owner: nn.Module, attr: str, p: torch.Tensor, *, init_values: float | None = None) -> None:
    """vitkit's initialisation of one parameter ``owner.<attr>`` (timm's ViT defaults), in place.

    The single definition used by ``VisionTransformer.init_weights``, fresh heads, and the loader's
    initialisation of what a checkpoint lacks, so those can never drift apart.
    """
    if isinstance(owner, (nn.LayerNorm, nn.RMSNorm)):
        p.fill_(1.0 if attr == "weight" else 0.0)
    elif attr in ("bias", "q_bias", "v_bias"):
        p.zero_()
    elif attr == "gamma":  # LayerScale
        p.fill_(1.0 if init_values is None else init_values)
    elif attr in PREFIX_TOKENS:
        nn.init.normal_(p, std=1e-6)
    elif isinstance(owner, nn.Conv2d):
        # lecun-normal-like init of the patch projection (over C*kh*kw), as in the JAX reference
        nn.init.trunc_normal_(p, std=math.sqrt(1.0 / p[0].numel()))
    elif attr == "latent":  # the MAP head's query
        nn.init.trunc_normal_(p, std=p.shape[-1] ** -0.5)
    else:  # Linear weights, pos_embed
        nn.init.trunc_normal_(p, std=0.02)


def init_module(module: nn.Module, *, init_values: float | None = None) -> None:
    """Initialise every parameter of ``module`` (e.g. a fresh head) with ``init_parameter``."""
    for owner in module.modules():
        for attr, p in owner.named_parameters(recurse=False):
            init_parameter(owner, attr, p, init_values=init_values)
