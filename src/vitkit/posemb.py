"""Resampling of absolute position embeddings to another patch grid, and of patch kernels to another size."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import POSEMB_RESAMPLES
from .errors import ConfigError

#: The interpolation each reference loader uses, so resampled weights give that loader's outputs.
RESAMPLE_STYLES: dict[str, dict[str, object]] = {
    "timm": {"mode": "bicubic", "antialias": True},  # timm resample_abs_pos_embed (torch checkpoints, dynamic size)
    "timm_npz": {"mode": "bilinear", "antialias": False},  # timm _load_weights for Google .npz files
    "hf": {"mode": "bicubic", "antialias": False},  # transformers interpolate_pos_encoding
    # Google's own loaders (vit_jax interpolate_posembed, big_vision resample_posemb): scipy.ndimage.zoom(order=1),
    # which maps output i to input i * (n_in - 1) / (n_out - 1): bilinear with the corners aligned
    "google": {"mode": "bilinear", "antialias": False, "align_corners": True},
    # SigLIP 2 NaFlex (transformers' resize_positional_embeddings, timm's naflexvit siglip models)
    "siglip2": {"mode": "bilinear", "antialias": True},
}
assert tuple(RESAMPLE_STYLES) == POSEMB_RESAMPLES  # the config validates names against the same list


def style_name(style: str) -> str:
    """A resampling style in words, e.g. 'bilinear, corners aligned'."""
    opts = RESAMPLE_STYLES[style]
    return f"{opts['mode']}{', antialias' if opts['antialias'] else ''}" \
           f"{', corners aligned' if opts.get('align_corners') else ''}"


def _interpolate(x: torch.Tensor, size: tuple[int, int], style: str) -> torch.Tensor:
    opts = RESAMPLE_STYLES[style]
    return F.interpolate(x, size=tuple(size), mode=str(opts["mode"]), align_corners=bool(opts.get("align_corners")),
                         antialias=bool(opts["antialias"]))


def posemb_sincos_2d(grid: tuple[int, int], dim: int, *, temperature: float = 10_000.0,
                     dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """Fixed 2-D sin-cos position embeddings (1, H*W, dim), as big_vision's ``posemb_sincos_2d`` (MoCo v3).

    Quarters of the width: sin(x * w), cos(x * w), sin(y * w), cos(y * w) with w = temperature ** -(i / (dim/4 - 1)),
    over row-major (y, x) patch positions. Computed in float32 (then cast), as big_vision does.
    """
    if dim % 4:
        raise ValueError(f"sincos2d position embeddings need a width divisible by 4, got {dim}")
    y, x = torch.meshgrid(torch.arange(grid[0], device=device, dtype=torch.float32),
                          torch.arange(grid[1], device=device, dtype=torch.float32), indexing="ij")
    quarter = dim // 4
    omega = torch.arange(quarter, device=device, dtype=torch.float32) / max(quarter - 1, 1)
    omega = 1.0 / temperature ** omega
    x = x.flatten()[:, None] * omega[None, :]  # (H*W, dim/4)
    y = y.flatten()[:, None] * omega[None, :]
    pe = torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1)  # (H*W, dim)
    return pe.to(dtype)[None]


def resample_posemb(
    posemb: torch.Tensor,
    new_grid: tuple[int, int],
    *,
    num_prefix_tokens: int,
    old_grid: tuple[int, int] | None = None,
    style: str = "timm",
) -> torch.Tensor:
    """Resample a (1, prefix + H*W, C) position embedding to ``new_grid`` = (H', W').

    Prefix tokens (class, distillation, registers) are kept as they are. Returns ``posemb`` itself when
    the grid already matches, except while a graph is being traced or exported: an exporter would freeze
    that Python branch, and a graph exported at 224 would then skip the resize at 160x224; the resize is
    recorded instead (an identity at the native grid). Interpolates in float32 and restores the dtype.
    """
    num_tokens = posemb.shape[1] - num_prefix_tokens
    if old_grid is None:
        side = math.isqrt(num_tokens)
        if side * side != num_tokens:
            raise ConfigError(f"position embedding with {num_tokens} patch tokens is not a square grid; pass old_grid")
        old_grid = (side, side)
    recording = torch.jit.is_tracing() or torch.compiler.is_exporting()
    if not recording and tuple(old_grid) == tuple(new_grid):
        return posemb
    prefix, grid = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    dim = grid.shape[-1]
    # (1, H*W, C) -> (1, C, H, W)
    grid = grid.float().reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    grid = _interpolate(grid, new_grid, style)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(posemb.dtype)  # (1, C, H', W') -> (1, H'*W', C)
    return torch.cat([prefix, grid], dim=1)


def resample_patch_embed(weight: torch.Tensor, new_size: tuple[int, int], *, style: str = "timm") -> torch.Tensor:
    """Resample a (D, C, kh, kw) patch kernel to ``new_size`` so that patches resized alike embed the same.

    FlexiViT's pseudo-inverse resize (as timm's ``resample_patch_embed``): if ``R`` resizes a kh x kw
    patch to the new size, the new kernel is ``w @ pinv(R)``, so <resize(x), w'> = <x, w>.
    """
    old = (int(weight.shape[-2]), int(weight.shape[-1]))
    if old == tuple(new_size):
        return weight
    dim, chans = weight.shape[:2]
    basis = torch.eye(old[0] * old[1]).reshape(-1, 1, old[0], old[1])  # every one-hot kh x kw patch
    resized = _interpolate(basis, new_size, style)
    # (kh*kw, 1, h', w') -> (h'*w', kh*kw): the resize as a matrix
    resize = resized.squeeze(1).permute(1, 2, 0).reshape(new_size[0] * new_size[1], -1)
    # (D, C, kh*kw) @ (kh*kw, h'*w') -> (D, C, h', w')
    out = weight.float().reshape(dim, chans, -1) @ torch.linalg.pinv(resize)
    return out.reshape(dim, chans, *new_size).to(weight.dtype)
