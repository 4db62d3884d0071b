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
    y, x = torch.meshgrid(torch.arange(grid[0], device=device, dtype=torch.float32),
                          torch.arange(grid[1], device=device, dtype=torch.float32), indexing="ij")
    return posemb_sincos_2d_at(y.flatten(), x.flatten(), dim, temperature=temperature).to(dtype)[None]


def posemb_sincos_2d_at(rows: torch.Tensor, cols: torch.Tensor, dim: int, *, temperature: float = 10_000.0
                        ) -> torch.Tensor:
    """``posemb_sincos_2d``'s embeddings (..., dim) of patches at float32 ``rows`` and ``cols`` (any shape)."""
    if dim % 4:
        raise ValueError(f"sincos2d position embeddings need a width divisible by 4, got {dim}")
    quarter = dim // 4
    omega = torch.arange(quarter, device=rows.device, dtype=torch.float32) / max(quarter - 1, 1)
    omega = 1.0 / temperature ** omega
    x = cols[..., None] * omega  # (..., dim/4)
    y = rows[..., None] * omega
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=-1)  # (..., dim)


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
    # (1, C, H', W') -> (1, H'*W', C); flatten, not reshape(1, -1, C): an ONNX export's shape inference may fix the
    # -1 of a reshape from the rotary tables' trace-time grid
    grid = grid.flatten(2).transpose(1, 2).to(posemb.dtype)
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


# ---------------------------------------------------------------------------------------------- in a graph
def _cubic(x: torch.Tensor, a: float) -> torch.Tensor:
    """Keys' cubic convolution kernel at |x| (torch's ``cubic_convolution1`` / ``2``), 0 beyond 2."""
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def _triangle(x: torch.Tensor) -> torch.Tensor:
    return (1 - x.abs()).clamp(min=0)


def resize_weights(size_in: int, size_out: torch.Tensor, index: torch.Tensor, style: str) -> torch.Tensor:
    """Row ``index`` of the (size_out, size_in) matrix by which ``F.interpolate`` in ``style`` resizes an axis
    of ``size_in`` samples to ``size_out``: (...) integer tensors (broadcast) -> (..., size_in) float32 weights.

    The same weights as torch's kernels (antialiased: PIL's filters, support widened by the downscale and
    renormalised; plain bilinear / bicubic: 2 / 4 taps with the edge sample repeated; corners aligned), written
    as tensor arithmetic on the sizes, so a traced or exported graph resizes to sizes it reads at run time.
    """
    opts = RESAMPLE_STYLES[style]
    j = torch.arange(size_in, dtype=torch.float32, device=index.device)  # the input samples
    n_out, i = size_out.float()[..., None], index.float()[..., None]
    if opts.get("align_corners"):
        weights = _triangle(j - i * (size_in - 1) / (n_out - 1).clamp(min=1))
    elif opts["antialias"]:
        scale = size_in / n_out
        x = (j + 0.5 - (i + 0.5) * scale) / scale.clamp(min=1)  # the filter's argument, widened when shrinking
        weights = _cubic(x, -0.5) if opts["mode"] == "bicubic" else _triangle(x)
    else:
        src = (i + 0.5) * size_in / n_out - 0.5  # the source position of output sample i
        if opts["mode"] == "bilinear":
            weights = _triangle(j - src.clamp(min=0))  # past the last sample: renormalised onto it below
        else:  # 4 taps around floor(src), each clamped to the axis (the edge sample repeated)
            base, t = src.floor(), src - src.floor()
            coeffs = (_cubic(t + 1, -0.75), _cubic(t, -0.75), _cubic(1 - t, -0.75), _cubic(2 - t, -0.75))
            weights = sum(c * (j == (base + k - 1).clamp(0, size_in - 1)).float() for k, c in enumerate(coeffs))
    return weights / weights.sum(dim=-1, keepdim=True)


def token_positions(grids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (row, column) of each token of padded patch sequences: grids (B, 2) and mask (B, L) -> two (B, L)
    long tensors, row-major over each image's grid; padding takes its image's last patch (so anything
    computed from it stays finite, and masked). Traceable: the length is read from ``mask``."""
    n = mask.long().cumsum(dim=1) - 1  # (B, L): 0, 1, ... over real tokens, then the last one repeated
    n = torch.maximum(n, torch.zeros_like(n))
    cols = grids[:, 1:]
    rows = torch.div(n, cols, rounding_mode="floor")
    return rows, n - rows * cols


def posemb_at_tokens(grid_posemb: torch.Tensor, old_grid: tuple[int, int], grids: torch.Tensor, rows: torch.Tensor,
                     cols: torch.Tensor, *, style: str) -> torch.Tensor:
    """``resample_posemb`` for a batch of grids at once, per token: (1, H*W, C) patch position embeddings on
    ``old_grid``, each image's grid ``grids`` (B, 2) and each token's ``rows`` and ``cols`` (B, L) -> (B, L, C),
    token (r, c) of image b taking row r, column c of the embeddings resized to ``grids[b]`` (float32 math,
    the input's dtype back). Tensor arithmetic only: a graph takes the grids as an input."""
    H, W = old_grid
    wy = resize_weights(H, grids[:, :1], rows, style)  # (B, L, H)
    wx = resize_weights(W, grids[:, 1:], cols, style)  # (B, L, W)
    mix = (wy[..., :, None] * wx[..., None, :]).flatten(2)  # (B, L, H, W) -> (B, L, H*W)
    return (mix @ grid_posemb[0].float()).to(grid_posemb.dtype)  # (B, L, H*W) @ (H*W, C) -> (B, L, C)
