"""The inventory of a checkpoint: its tensors, format and architecture, without building a model."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from ..config import PretrainedCfg, ViTConfig
from ..errors import VitkitError
from .adapt import numerics_line
from .families import detect_format
from .infer import ARCH_FIELDS, Known, config_from, match_known
from .io import Checkpoint, TensorView, read_checkpoint, tensor_info
from .load import pretrained_cfg_for


@dataclass
class Inventory:
    path: str
    kind: str  # file kind: safetensors, torch, npz
    tensors: list[tuple[str, tuple[int, ...], str]]  # (name, shape, dtype)
    format: str | None = None
    config: ViTConfig | None = None
    matches: str | None = None  # a registered model name with this architecture
    pretrained_cfg: PretrainedCfg | None = None  # the preprocessing the checkpoint states (read off its files)
    problems: list[str] = field(default_factory=list)  # why the format or architecture is unknown
    numerics: str | None = None  # the activation, norm eps and resampling a model loaded from it runs with

    @property
    def num_params(self) -> int:
        return sum(math.prod(shape) for _, shape, _ in self.tensors)

    @property
    def num_bytes(self) -> int:
        return sum(math.prod(shape) * _itemsize(dtype) for _, shape, dtype in self.tensors)

    def dtypes(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, _, dtype in self.tensors:
            counts[dtype] = counts.get(dtype, 0) + 1
        return counts

    def architecture(self) -> str:
        if self.config is None:
            return "unknown"
        text = " ".join(f"{k}={_short(getattr(self.config, k))}" for k in ARCH_FIELDS)
        return text + (f" (= {self.matches})" if self.matches else "")

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "format": self.format, "num_params": self.num_params,
                "num_bytes": self.num_bytes, "dtypes": self.dtypes(), "matches": self.matches,
                "config": self.config.to_dict() if self.config else None, "problems": self.problems,
                "numerics": self.numerics,
                "tensors": [{"name": n, "shape": list(s), "dtype": d} for n, s, d in self.tensors]}

    def format_table(self, limit: int | None = None) -> str:
        """A readable listing: a header (format, architecture, counts), then one line per tensor."""
        dtypes = ", ".join(f"{d}: {n}" for d, n in self.dtypes().items())
        lines = [f"file:         {self.path} ({self.kind}, {self.num_bytes / 2**20:.1f} MiB)",
                 f"format:       {self.format or 'unknown'}",
                 f"architecture: {self.architecture()}",
                 f"tensors:      {len(self.tensors)} ({dtypes}), {self.num_params:,} parameters"]
        if self.numerics:
            lines.append(f"numerics:     {self.numerics.removeprefix('numerics: ')}")
        lines += [f"note:         {p}" for p in self.problems]
        shown = self.tensors if limit is None else self.tensors[:limit]
        width = max((len(n) for n, _, _ in shown), default=4) + 2
        lines.append("")
        lines.append(f"{'name':<{width}}{'shape':<24}dtype")
        lines += [f"{n:<{width}}{str(s):<24}{d}" for n, s, d in shown]
        if len(shown) < len(self.tensors):
            lines.append(f"... and {len(self.tensors) - len(shown)} more (--all lists them)")
        return "\n".join(lines)


def _torch_dtype(name: str) -> torch.dtype | None:
    dtype = getattr(torch, name, None)
    return dtype if isinstance(dtype, torch.dtype) else None


def _itemsize(dtype: str) -> int:
    torch_dtype = _torch_dtype(dtype)
    return torch_dtype.itemsize if torch_dtype is not None else 4


def _shapes_only(ckpt: Checkpoint, tensors: list[tuple[str, tuple[int, ...], str]]) -> Checkpoint:
    """``ckpt`` with meta tensors of the same names, shapes and dtypes, so converting it reads no data; ``ckpt``
    itself where a lazy view checks each tensor as it is read (an .npz) or a dtype has no torch equivalent."""
    if isinstance(ckpt.tensors, TensorView):
        return ckpt
    meta = {}
    for name, shape, dtype in tensors:
        torch_dtype = _torch_dtype(dtype)
        if torch_dtype is None:
            return ckpt
        meta[name] = torch.empty(shape, dtype=torch_dtype, device="meta")
    return dataclasses.replace(ckpt, tensors=meta)


def _short(value: Any) -> Any:
    if isinstance(value, tuple) and len(set(value)) == 1:
        return value[0]
    return round(value, 4) if isinstance(value, float) else value


def inventory(source: str | os.PathLike[str], *, format: str | None = None, known: Known | None = None) -> Inventory:
    """Names, shapes and dtypes of every tensor in ``source``, its format and inferred architecture (matched
    against the ``known`` architectures, e.g. the registry's)."""
    ckpt = read_checkpoint(source)
    inv = Inventory(path=os.fspath(ckpt.path), kind=ckpt.kind,
                    tensors=[(k, *tensor_info(ckpt.tensors, k)) for k in ckpt.tensors])
    try:
        family = detect_format(ckpt, format)
        inv.format = family.name
        converted = family.convert(_shapes_only(ckpt, inv.tensors))
        inv.config = config_from(converted, known)
        inv.pretrained_cfg = pretrained_cfg_for(converted, inv.config)
        inv.matches = match_known(inv.config, known)
        inv.numerics = numerics_line(inv.config, family.name, converted.hints)
    except VitkitError as exc:
        inv.problems.append(str(exc))
    return inv
