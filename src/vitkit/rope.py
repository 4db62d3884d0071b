"""2-D rotary position embeddings (RoPE) for ViTs, computed for any patch grid.

Two forms, named by the models that use them:

- ``'eva'`` (EVA-02, Perception Encoder; timm's ``RotaryEmbeddingCat``): integer patch positions
  (plus ``grid_offset``), optionally rescaled so the grid maps onto a reference grid (``ref_grid``), times
  inverse frequencies ``1 / temperature ** (i / n)``. Perception Encoder is this form with 'xy' indexing
  (the width coordinate first).
- ``'dinov3'``: patch centres normalised to [-1, 1] on each axis, angles ``2 pi x / period`` with periods
  ``temperature ** (2 i / (head_dim / 2))``.

A table is (N, 2 * head_dim): the sines then the cosines of each patch's angles, in the 'interleaved'
layout ([a0, a0, a1, a1, ...], rotating pairs of neighbouring channels) or the 'half' layout
([a0, a1, ..., a0, a1, ...], rotating channel i with channel i + head_dim / 2). The grid size is read from
the input at run time, so the tables are part of an exported graph, not a constant.
"""

from __future__ import annotations

import math

import torch

ROPE_FORMS = ("none", "eva", "dinov3")
GRID_INDEXINGS = ("ij", "xy")


def _axis_positions(size: int, *, form: str, offset: float, ref: int | None, device: torch.device | None
                    ) -> torch.Tensor:
    """Positions along one axis of ``size`` patches (float32)."""
    if form == "dinov3":  # patch centres, normalised to [0, 1] then mapped to [-1, 1]
        t = (torch.arange(size, device=device, dtype=torch.float32) + 0.5 + offset) / size
        return 2.0 * t - 1.0
    t = torch.arange(size, device=device, dtype=torch.int64).to(torch.float32) + offset
    if ref is not None:  # map this grid onto the reference (pre-training) grid
        t = t / size * ref
    return t


def rope_coords(grid: tuple[int, int], *, form: str, offset: float = 0.0, indexing: str = "ij",
                ref_grid: tuple[int, int] | None = None, device: torch.device | None = None) -> torch.Tensor:
    """Patch coordinates (h*w, 2) in row-major patch order; channels (row, column) for 'ij', (column, row)
    for 'xy'."""
    h, w = grid
    ref_h, ref_w = ref_grid if ref_grid is not None else (None, None)
    ys = _axis_positions(h, form=form, offset=offset, ref=ref_h, device=device)
    xs = _axis_positions(w, form=form, offset=offset, ref=ref_w, device=device)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")  # each (h, w)
    pair = (xx, yy) if indexing == "xy" else (yy, xx)
    return torch.stack(pair, dim=-1).reshape(-1, 2)  # (h, w, 2) -> (h*w, 2)


def rope_frequencies(head_dim: int, *, form: str, temperature: float) -> torch.Tensor:
    """Per-band multipliers (head_dim // 4,): inverse frequencies ('eva') or periods ('dinov3')."""
    n = head_dim // 4
    if form == "dinov3":
        return temperature ** (2.0 * torch.arange(n, dtype=torch.float32) / (head_dim // 2))
    return 1.0 / (temperature ** (torch.arange(0, n, 1, dtype=torch.int64).to(torch.float32) / n))


def rope_table(grid: tuple[int, int], head_dim: int, *, form: str, temperature: float, offset: float = 0.0,
               indexing: str = "ij", ref_grid: tuple[int, int] | None = None, rotate_half: bool = False,
               device: torch.device | None = None) -> torch.Tensor:
    """The [sin, cos] table (h*w, 2 * head_dim) for a patch grid, float32."""
    coords = rope_coords(grid, form=form, offset=offset, indexing=indexing, ref_grid=ref_grid, device=device)
    bands = rope_frequencies(head_dim, form=form, temperature=temperature).to(device)
    if form == "dinov3":
        angles = 2 * math.pi * coords[:, :, None] / bands[None, None, :]  # (N, 2, n)
    else:
        angles = coords[:, :, None] * bands  # (N, 2, n)
    angles = angles.flatten(1)  # (N, 2, n) -> (N, head_dim / 2)
    sin, cos = angles.sin(), angles.cos()
    if rotate_half:
        sin, cos = torch.cat([sin, sin], dim=-1), torch.cat([cos, cos], dim=-1)
    else:
        # [a0, a0, a1, a1, ...] by stacking (repeat_interleave exports to ONNX with its trace-time sizes)
        sin, cos = torch.stack([sin, sin], dim=-1).flatten(-2), torch.stack([cos, cos], dim=-1).flatten(-2)
    return torch.cat([sin, cos], dim=-1)


def _rotate(x: torch.Tensor, half: bool) -> torch.Tensor:
    if half:  # [x0 .. x(d/2-1), x(d/2) .. x(d-1)] -> [-x(d/2).., x0 ..]
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([-x2, x1], dim=-1)
    # [x0, x1, x2, x3, ...] -> [-x1, x0, -x3, x2, ...]
    return torch.stack([-x[..., 1::2], x[..., ::2]], dim=-1).flatten(-2)


def apply_rope(x: torch.Tensor, table: torch.Tensor, *, rotate_half: bool, num_prefix_tokens: int) -> torch.Tensor:
    """Rotate the patch tokens of ``x`` (B, heads, prefix + N, head_dim) by ``table`` (N, 2 * head_dim);
    prefix tokens (class, registers) pass unrotated."""
    prefix, patches = x[:, :, :num_prefix_tokens], x[:, :, num_prefix_tokens:]
    sin, cos = table.chunk(2, dim=-1)
    rotated = (patches * cos + _rotate(patches, rotate_half) * sin).to(x.dtype)
    return torch.cat([prefix, rotated], dim=2)


def rope_macs(num_tokens: int, dim: int) -> int:
    """Multiply-accumulates of rotating q and k of ``num_tokens`` tokens of width ``dim`` (2 per element each)."""
    return 2 * 2 * num_tokens * dim
