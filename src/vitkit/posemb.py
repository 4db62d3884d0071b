"""Resampling of absolute position embeddings to another patch grid, and of patch kernels to another size."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .errors import ConfigError

#: The interpolation each reference loader uses, so resampled weights give that loader's outputs.
RESAMPLE_STYLES: dict[str, dict[str, object]] = {
    "timm": {"mode": "bicubic", "antialias": True},  # timm resample_abs_pos_embed (torch checkpoints, dynamic size)
    "timm_npz": {"mode": "bilinear", "antialias": False},  # timm _load_weights for Google .npz files
    "hf": {"mode": "bicubic", "antialias": False},  # transformers interpolate_pos_encoding
}


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
    opts = RESAMPLE_STYLES[style]
    prefix, grid = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    dim = grid.shape[-1]
    # (1, H*W, C) -> (1, C, H, W)
    grid = grid.float().reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(new_grid), mode=str(opts["mode"]), align_corners=False,
                         antialias=bool(opts["antialias"]))
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
    opts = RESAMPLE_STYLES[style]
    dim, chans = weight.shape[:2]
    basis = torch.eye(old[0] * old[1]).reshape(-1, 1, old[0], old[1])  # every one-hot kh x kw patch
    resized = F.interpolate(basis, size=tuple(new_size), mode=str(opts["mode"]), align_corners=False,
                            antialias=bool(opts["antialias"]))
    # (kh*kw, 1, h', w') -> (h'*w', kh*kw): the resize as a matrix
    resize = resized.squeeze(1).permute(1, 2, 0).reshape(new_size[0] * new_size[1], -1)
    # (D, C, kh*kw) @ (kh*kw, h'*w') -> (D, C, h', w')
    out = weight.float().reshape(dim, chans, -1) @ torch.linalg.pinv(resize)
    return out.reshape(dim, chans, *new_size).to(weight.dtype)
