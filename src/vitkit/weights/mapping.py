"""Key-mapping tables: rename a checkpoint's tensors to vitkit names, and back.

A table is data: rows ``(source pattern, vitkit pattern or None, transform name)``.

- ``{}`` in a pattern stands for a layer index; ``*`` (drop rows only) for any text.
- A ``#q`` / ``#k`` / ``#v`` suffix names one chunk of a fused tensor: on the side that has the
  fused tensor it is split along dim 0 into as many chunks as the table names; on the other side
  the chunks are concatenated in q, k, v order.
- ``None`` as the vitkit pattern drops the key (it is reported, not loaded).
- Transforms are named pairs of functions (to vitkit, back), listed in ``TRANSFORMS``.

The same engine runs both ways (``remap(..., reverse=True)``) so every table is also a writer.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch

from ..errors import CorruptCheckpointError

Rule = tuple[str, "str | None", str]
Transform = Callable[[torch.Tensor, int], torch.Tensor]
PART_ORDER = ("q", "k", "v")


# ---------------------------------------------------------------------- named tensor transforms
def _identity(t: torch.Tensor, heads: int) -> torch.Tensor:
    return t


def _transpose(t: torch.Tensor, heads: int) -> torch.Tensor:
    return t.transpose(0, 1)  # dense kernel (in, out) <-> Linear weight (out, in)


def _conv_from_hwio(t: torch.Tensor, heads: int) -> torch.Tensor:
    return t.permute(3, 2, 0, 1)  # (kh, kw, in, out) -> (out, in, kh, kw)


def _conv_to_hwio(t: torch.Tensor, heads: int) -> torch.Tensor:
    return t.permute(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)


def _heads_in_from(t: torch.Tensor, heads: int) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).transpose(0, 1)  # (D, heads, head_dim) -> (heads*head_dim, D)


def _heads_in_to(t: torch.Tensor, heads: int) -> torch.Tensor:
    return t.transpose(0, 1).reshape(t.shape[1], heads, -1)  # (heads*head_dim, D) -> (D, heads, head_dim)


def _heads_out_from(t: torch.Tensor, heads: int) -> torch.Tensor:
    return t.reshape(-1, t.shape[-1]).transpose(0, 1)  # (heads, head_dim, D) -> (D, heads*head_dim)


def _heads_out_to(t: torch.Tensor, heads: int) -> torch.Tensor:
    return t.transpose(0, 1).reshape(heads, -1, t.shape[0])  # (D, heads*head_dim) -> (heads, head_dim, D)


def _heads_bias_from(t: torch.Tensor, heads: int) -> torch.Tensor:
    return t.reshape(-1)  # (heads, head_dim) -> (heads*head_dim,)


def _heads_bias_to(t: torch.Tensor, heads: int) -> torch.Tensor:
    return t.reshape(heads, -1)  # (heads*head_dim,) -> (heads, head_dim)


def _add_batch(t: torch.Tensor, heads: int) -> torch.Tensor:
    return t.unsqueeze(0)  # (N, D) -> (1, N, D)


def _drop_batch(t: torch.Tensor, heads: int) -> torch.Tensor:
    return t.squeeze(0)  # (1, N, D) -> (N, D)


def _token_from(t: torch.Tensor, heads: int) -> torch.Tensor:
    return t.reshape(1, 1, -1)  # (D,) -> (1, 1, D): a learned token (CLIP's class_embedding)


def _token_to(t: torch.Tensor, heads: int) -> torch.Tensor:
    return t.reshape(-1)  # (1, 1, D) -> (D,)


def _patch_from(t: torch.Tensor, heads: int) -> torch.Tensor:
    """A patch embedding as vitkit's kernel (D, C, p, p): a kernel as it is, or a linear layer over flattened
    patches (D, p*p*C), each patch flattened as (patch row, patch column, channel) as transformers' SigLIP 2
    processor and timm's NaFlexVit flatten them, with C = 3 (RGB) or 1 (grey)."""
    if t.ndim == 4:
        return t
    if t.ndim != 2:
        raise CorruptCheckpointError(f"A patch embedding of shape {tuple(t.shape)} is neither a kernel (D, C, p, p) "
                                     "nor a linear layer over flattened patches (D, p*p*C): the file is corrupt.")
    dim, width = t.shape
    for channels in (3, 1):
        side = math.isqrt(width // channels)
        if width % channels == 0 and side * side * channels == width and side > 0:
            return t.reshape(dim, side, side, channels).permute(0, 3, 1, 2)  # (D, p*p*C) -> (D, C, p, p)
    raise CorruptCheckpointError(f"A linear patch embedding of shape {tuple(t.shape)} does not flatten square patches "
                                 f"of 3 or 1 channels ({width} inputs is not p*p*3 or p*p): the file is corrupt or "
                                 "not an image model's.")


def _grid_from(t: torch.Tensor, heads: int) -> torch.Tensor:
    return t.reshape(t.shape[0], -1, t.shape[-1])  # (1, H, W, D) -> (1, H*W, D): timm's NaFlexVit positions


def _grid_to(t: torch.Tensor, heads: int) -> torch.Tensor:
    side = math.isqrt(t.shape[1])
    return t.reshape(t.shape[0], side, side, t.shape[-1])  # (1, H*W, D) -> (1, H, W, D), a square grid


#: name -> the number of dimensions the transform to vitkit reads (None: any)
TRANSFORM_NDIM: dict[str, int | None] = {"id": None, "T": 2, "conv": 4, "heads_in": 3, "heads_out": 3,
                                         "heads_bias": 2, "batch": 2, "token": 1, "patch": None, "grid": 4}

#: name -> (to vitkit, back to the checkpoint's layout)
TRANSFORMS: dict[str, tuple[Transform, Transform]] = {
    "id": (_identity, _identity),
    "T": (_transpose, _transpose),
    "conv": (_conv_from_hwio, _conv_to_hwio),
    "heads_in": (_heads_in_from, _heads_in_to),
    "heads_out": (_heads_out_from, _heads_out_to),
    "heads_bias": (_heads_bias_from, _heads_bias_to),
    "batch": (_add_batch, _drop_batch),
    "token": (_token_from, _token_to),
    "patch": (_patch_from, _identity),  # kernels are written as kernels
    "grid": (_grid_from, _grid_to),
}


# ---------------------------------------------------------------------- table helpers
def leaf(base: str, name: str, sep: str = ".") -> str:
    """``leaf('blocks.{}.attn.qkv#q', 'weight')`` -> ``'blocks.{}.attn.qkv.weight#q'``."""
    stem, hash_, part = base.partition("#")
    return f"{stem}{sep}{name}{hash_}{part}"


def params(src: str, dst: str, weight_tf: str = "id", bias_tf: str = "id", *,
           src_names: tuple[str, str] = ("weight", "bias"), sep: str = ".") -> list[Rule]:
    """The two rows of a layer with a weight and a bias (``src_names`` as the checkpoint calls them)."""
    return [(leaf(src, src_names[0], sep), leaf(dst, "weight"), weight_tf),
            (leaf(src, src_names[1], sep), leaf(dst, "bias"), bias_tf)]


def fused(src: str, dst: str, names: Sequence[str] = ("query", "key", "value"), **kwargs: Any) -> list[Rule]:
    """Rows for separate q, k, v layers (``QKV`` in ``src`` stands for each of ``names``) that vitkit fuses
    into one layer ``dst`` (chunks ``#q``, ``#k``, ``#v``)."""
    return [row for name, part in zip(names, PART_ORDER)
            for row in params(src.replace("QKV", name), f"{dst}#{part}", **kwargs)]


# ---------------------------------------------------------------------- the engine
@dataclass
class Remapped:
    """The result of applying a table: renamed tensors, and what did not map."""

    tensors: dict[str, torch.Tensor]
    unmatched: list[str] = field(default_factory=list)  # kept under their own name
    dropped: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Row:
    regex: re.Pattern[str]
    dst: str | None  # a format string with {} for the layer index
    fn: Transform
    src_index: int = 0  # which chunk of the source tensor this row reads
    src_count: int = 1  # into how many chunks the source tensor is split
    dst_part: str = ""
    dst_count: int = 1  # how many chunks make the target tensor
    ndim: int | None = None  # dimensions the transform reads (checked first: a scalar is not a matrix)


def _split(pattern: str) -> tuple[str, str]:
    base, _, part = pattern.partition("#")
    return base, part


def _compile(pattern: str) -> re.Pattern[str]:
    rx = re.escape(pattern).replace(r"\{\}", r"(\d+)").replace(r"\*", ".*")
    return re.compile(rx + r"\Z")


def _parts_by_base(patterns: Iterable[str]) -> dict[str, list[str]]:
    parts: dict[str, set[str]] = defaultdict(set)
    for pattern in patterns:
        base, part = _split(pattern)
        if part:
            parts[base].add(part)
    return {base: sorted(ps, key=PART_ORDER.index) for base, ps in parts.items()}


@lru_cache(maxsize=64)
def _compile_table(rules: tuple[Rule, ...], reverse: bool) -> tuple[_Row, ...]:
    pairs = [((dst, src) if reverse else (src, dst), TRANSFORMS[tf][int(reverse)], tf)
             for src, dst, tf in rules if not (reverse and dst is None)]
    src_parts = _parts_by_base(frm for (frm, _), _, _ in pairs)
    dst_parts = _parts_by_base(to for (_, to), _, _ in pairs if to is not None)
    rows = []
    for (frm, to), fn, tf in pairs:
        frm_base, frm_part = _split(frm)
        to_base, to_part = _split(to) if to is not None else (None, "")
        chunks = src_parts.get(frm_base, [""])
        rows.append(_Row(_compile(frm_base), to_base, fn, src_index=chunks.index(frm_part), src_count=len(chunks),
                         dst_part=to_part, dst_count=len(dst_parts.get(to_base, [""])) if to_base else 1,
                         ndim=None if reverse else TRANSFORM_NDIM[tf]))  # written tensors are the model's
    return tuple(rows)


def _check_piece(tensor: torch.Tensor, row: _Row, key: str, source: str) -> None:
    """The tensor a row reads must have the dimensions its transform expects and split evenly into its chunks."""
    split = row.src_count > 1 and (tensor.ndim == 0 or tensor.shape[0] % row.src_count)
    empty = row.ndim is not None and tensor.numel() == 0  # reshapes of an empty tensor are ambiguous
    if split or empty or (row.ndim is not None and tensor.ndim != row.ndim):
        what = f"non-empty {row.ndim}-d " if row.ndim is not None else ""
        what += f"tensor that splits into {row.src_count} equal parts along dim 0" if row.src_count > 1 else "tensor"
        raise CorruptCheckpointError(f"{source}: tensor {key!r} has shape {tuple(tensor.shape)}, expected a {what}. "
                                     "The file is corrupt or not of this checkpoint family.")


def remap(tensors: Mapping[str, torch.Tensor], rules: Sequence[Rule], *, reverse: bool = False,
          num_heads: int = 1, source: str = "the checkpoint") -> Remapped:
    """Rename (and reshape) ``tensors`` by a table; ``reverse=True`` maps vitkit names back.

    Keys no row matches are kept under their own name and listed in ``unmatched``. Tensors are read
    from ``tensors`` one key at a time, so a lazy mapping is not materialised all at once.
    """
    rows = _compile_table(tuple(rules), reverse)
    result = Remapped({})
    pending: dict[str, dict[str, Any]] = defaultdict(dict)  # fused target -> part -> (tensor, source key)
    for key in list(tensors):
        hits = [(row, m) for row in rows if (m := row.regex.match(key))]
        if not hits:
            result.tensors[key] = tensors[key]
            result.unmatched.append(key)
            continue
        tensor = tensors[key]
        for row, m in hits:
            if row.dst is None:
                result.dropped.append(key)
                continue
            _check_piece(tensor, row, key, source)
            piece = tensor.chunk(row.src_count, dim=0)[row.src_index] if row.src_count > 1 else tensor
            value = row.fn(piece, num_heads)
            name = row.dst.format(*m.groups())
            if row.dst_part:
                pending[name][row.dst_part] = (value, key, row.dst_count)
            else:
                result.tensors[name] = value
    for name, parts in pending.items():
        if len(parts) != next(iter(parts.values()))[2]:
            # an incomplete fused tensor is not built: its pieces stay, unmatched, under their own names
            for key in sorted({key for _, key, _ in parts.values()}):
                result.tensors[key] = tensors[key]
                result.unmatched.append(key)
            continue
        pieces = [parts[p][0] for p in PART_ORDER if p in parts]
        if len({(t.shape[1:], t.dtype) for t in pieces}) > 1:
            shapes = ", ".join(f"{parts[p][1]} {tuple(parts[p][0].shape)}" for p in PART_ORDER if p in parts)
            raise CorruptCheckpointError(f"{source}: the parts of {name!r} do not fit together ({shapes}): the file "
                                         "is corrupt or mixes checkpoints.")
        result.tensors[name] = torch.cat(pieces, dim=0)
    return result
