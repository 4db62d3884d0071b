"""Building blocks of a Vision Transformer. Parameter names follow timm's ViT."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn


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
    """Image to patch tokens: a strided convolution. (B, C, H, W) -> (B, D, H/p, W/p)."""

    def __init__(self, *, patch_size: tuple[int, int], in_chans: int, embed_dim: int, bias: bool = True) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


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


class Attention(nn.Module):
    """Multi-head self-attention.

    The fused kernel (``scaled_dot_product_attention``) runs unless attention weights are asked for
    (``return_attn=True``); then the explicit path computes and returns them. ``causal``: each token attends
    to itself and the tokens before it only (CLIP's text tower).
    """

    def __init__(self, dim: int, *, num_heads: int, qkv_bias: bool, qk_scale: float | None, qk_norm: bool,
                 proj_bias: bool, attn_drop: float, proj_drop: float, norm_layer: Callable[[int], nn.Module],
                 causal: bool = False) -> None:
        super().__init__()
        self.causal = causal
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale if qk_scale is not None else self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, return_attn: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        B, N, C = x.shape
        # (B, N, 3C) -> (3, B, heads, N, head_dim)
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        attn = None
        if return_attn:
            scores = (q * self.scale) @ k.transpose(-2, -1)  # (B, heads, N, N)
            if self.causal:
                scores = scores.masked_fill(torch.ones(N, N, dtype=torch.bool, device=x.device).triu(1), -math.inf)
            attn = scores.softmax(dim=-1)
            x = self.attn_drop(attn) @ v
        else:
            x = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0, scale=self.scale, is_causal=self.causal)
        x = x.transpose(1, 2).reshape(B, N, C)  # (B, heads, N, head_dim) -> (B, N, C)
        x = self.proj_drop(self.proj(x))
        return (x, attn) if return_attn else x


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, *, act_layer: Callable[[], nn.Module], drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, *, num_heads: int, mlp_ratio: float, qkv_bias: bool, qk_scale: float | None,
                 qk_norm: bool, proj_bias: bool, drop: float, attn_drop: float, drop_path: float,
                 init_values: float | None, norm_layer: Callable[[int], nn.Module],
                 act_layer: Callable[[], nn.Module], causal: bool = False) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale, qk_norm=qk_norm,
                              proj_bias=proj_bias, attn_drop=attn_drop, proj_drop=drop, norm_layer=norm_layer,
                              causal=causal)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, return_attn: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if return_attn:
            y, attn = self.attn(self.norm1(x), return_attn=True)
        else:
            y, attn = self.attn(self.norm1(x)), None
        x = x + self.drop_path1(self.ls1(y))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return (x, attn) if return_attn else x


class AttentionPoolHead(nn.Module):
    """Multihead attention pooling (MAP, as in SigLIP): one learned query attends over the tokens.

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

    def forward(self, x: torch.Tensor, return_attn: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Pool tokens (B, N, C) to (B, C); with ``return_attn`` also the query's weights (B, heads, 1, N),
        computed explicitly (the fused kernel does not expose them)."""
        B, N, C = x.shape
        # (1, 1, C) -> (B, heads, 1, head_dim)
        q = self.q(self.latent.expand(B, -1, -1)).reshape(B, 1, self.num_heads, self.head_dim).transpose(1, 2)
        # (B, N, 2C) -> (2, B, heads, N, head_dim)
        k, v = self.kv(x).reshape(B, N, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if return_attn:
            attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, heads, 1, N)
            x = attn @ v
        else:
            x = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
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
    elif attr == "bias":
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
