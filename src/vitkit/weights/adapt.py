"""Fit a converted state dict to the model it loads into: heads, position grid, input channels, patch size.

Each step is a small function that returns the adapted tensors and says what it did; anything it cannot
adapt is left as it is, for the strict load to report as a mismatch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from ..config import ViTConfig
from ..errors import CheckpointError
from ..posemb import resample_patch_embed, resample_posemb, style_name

HEAD_KEYS = ("head.weight", "head.bias", "head_dist.weight", "head_dist.bias")
PRE_LOGITS_KEYS = ("pre_logits.fc.weight", "pre_logits.fc.bias")
Shape = tuple[int, ...]


@dataclass
class Adapted:
    state: dict[str, torch.Tensor]
    newly_initialized: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def adapt_in_chans(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """An RGB patch kernel (D, 3, kh, kw) for ``in_chans`` inputs, as timm's ``adapt_input_conv``.

    One channel sums the RGB kernels (a grey image then embeds as its RGB copy would); more channels
    repeat them, scaled by 3 / in_chans so the response to a uniform input is unchanged.
    """
    if weight.shape[1] == in_chans:
        return weight
    w = weight.float()
    if in_chans == 1:
        w = w.sum(dim=1, keepdim=True)  # (D, C, kh, kw) -> (D, 1, kh, kw)
    elif weight.shape[1] == 3:
        repeat = math.ceil(in_chans / 3)
        w = w.repeat(1, repeat, 1, 1)[:, :in_chans] * (3 / in_chans)  # (D, 3, kh, kw) -> (D, in_chans, kh, kw)
    else:
        raise CheckpointError(f"Cannot adapt a patch embedding with {weight.shape[1]} input channels to {in_chans}: "
                              "only RGB (3-channel) kernels are adapted. Build the model with "
                              f"in_chans={weight.shape[1]}.")
    return w.to(weight.dtype)


def _patch_embed(out: Adapted, expected: Mapping[str, Shape], style: str) -> None:
    key = "patch_embed.proj.weight"
    if key not in out.state or key not in expected:
        return
    w, want = out.state[key], expected[key]
    if w.ndim != 4 or w.shape[0] != want[0] or tuple(w.shape) == want:
        return
    if w.shape[1] != want[1]:
        out.notes.append(f"{key}: {w.shape[1]} input channels adapted to {want[1]}")
        w = adapt_in_chans(w, want[1])
    if tuple(w.shape[2:]) != tuple(want[2:]):
        style = "timm_npz" if style == "google" else style  # Google's loaders do not resample kernels; timm's do
        out.notes.append(f"{key}: patch {tuple(w.shape[2:])} resampled to {tuple(want[2:])} ({style_name(style)})")
        w = resample_patch_embed(w, (want[2], want[3]), style=style)
    out.state[key] = w


def _pos_embed(out: Adapted, expected: Mapping[str, Shape], config: ViTConfig, style: str,
               source_grid: tuple[int, int] | None) -> None:
    key = "pos_embed"
    if key not in out.state or key not in expected:
        return
    pe, want = out.state[key], expected[key]
    prefix = 0 if config.no_embed_class else config.num_prefix_tokens
    if pe.ndim != 3 or pe.shape[2] != want[2]:
        return
    patches = pe.shape[1] - prefix
    side = math.isqrt(max(patches, 0))
    grid = source_grid if source_grid is not None else (side, side)
    if grid[0] * grid[1] != patches or (tuple(pe.shape) == want and tuple(grid) == config.grid_size):
        return
    out.state[key] = resample_posemb(pe, config.grid_size, num_prefix_tokens=prefix, old_grid=tuple(grid),
                                     style=style)
    kept = f", {prefix} prefix token{'s' * (prefix != 1)} kept" if prefix else ""
    out.notes.append(f"{key}: grid {grid[0]}x{grid[1]} resampled to {config.grid_size[0]}x{config.grid_size[1]} "
                     f"({style_name(style)}){kept}")


def _heads(out: Adapted, expected: Mapping[str, Shape]) -> None:
    """Classifier heads: dropped when the model has none, replaced when the class count differs."""
    for key in (*HEAD_KEYS, *PRE_LOGITS_KEYS):
        have, want = out.state.get(key), expected.get(key)
        if have is not None and want is None:
            out.dropped.append(key)
            del out.state[key]
        elif want is not None and have is None:
            out.newly_initialized.append(key)
        elif have is not None and want is not None and key in HEAD_KEYS and have.shape[0] != want[0]:
            out.newly_initialized.append(key)  # another class count: a fresh head, as transformers does
            del out.state[key]


def adapt(state: Mapping[str, torch.Tensor], expected: Mapping[str, Shape], config: ViTConfig, *,
          style: str, source_grid: tuple[int, int] | None = None) -> Adapted:
    """Fit ``state`` to a model whose parameters have the ``expected`` shapes.

    ``style`` names the resampling numerics of the checkpoint family's reference loader;
    ``source_grid`` is the checkpoint's patch grid when its config states one (else a square is assumed).
    """
    out = Adapted(dict(state))
    _patch_embed(out, expected, style)
    _pos_embed(out, expected, config, style, source_grid)
    _heads(out, expected)
    return out
