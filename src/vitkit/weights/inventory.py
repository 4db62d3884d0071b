"""The inventory of a checkpoint: its tensors, format and architecture, without building a model."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import PretrainedCfg, ViTConfig
from ..errors import CheckpointError, VitkitError
from .families import detect_format
from .infer import ARCH_FIELDS, Known, block_form, match_known, pretrained_cfg_for, stated_config
from .readers import Checkpoint, TensorView, read_checkpoint, tensor_info


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
    errors: list[VitkitError] = field(default_factory=list, repr=False)  # the errors behind the problems
    also_matches: list[str] = field(default_factory=list)  # other registered names of the same architecture
    training_state: list[str] | None = None  # a training checkpoint's top-level keys (weights under 'model')
    numerics: str | None = None  # the activation, norm eps and resampling a model loaded from it runs with
    file_bytes: int | None = None  # a training checkpoint's size on disk (its tensors are the model's only)

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
        text += "".join(f" {k}={_short(v)}" for k, v in block_form(self.config).items())
        if not self.matches:
            return text
        also = f"; same architecture as {', '.join(self.also_matches)}" if self.also_matches else ""
        return f"{text} (= {self.matches}{also})"

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "format": self.format, "num_params": self.num_params,
                "num_bytes": self.num_bytes, "dtypes": self.dtypes(), "matches": self.matches,
                "config": self.config.to_dict() if self.config else None, "problems": self.problems,
                "also_matches": self.also_matches, "training_state": self.training_state,
                "numerics": self.numerics,
                "tensors": [{"name": n, "shape": list(s), "dtype": d} for n, s, d in self.in_natural_order()]}

    def in_natural_order(self) -> list[tuple[str, tuple[int, ...], str]]:
        """The tensors by name with numbers compared as numbers (blocks.2 before blocks.10)."""
        return sorted(self.tensors, key=lambda t: _natural_key(t[0]))

    def format_table(self, limit: int | None = None) -> str:
        """A readable listing: a header (format, architecture, counts), then one line per tensor."""
        dtypes = ", ".join(f"{d}: {n}" for d, n in self.dtypes().items())
        size = f"{self.num_bytes / 2**20:.1f} MiB"
        if self.file_bytes is not None:
            size = f"{self.file_bytes / 2**20:.1f} MiB on disk, the model's weights {size}"
        lines = [f"file:         {self.path} ({self.kind}, {size})"]
        if self.training_state is not None:
            rest = ", ".join(k for k in self.training_state if k != "model")
            lines.append(f"contents:     a training checkpoint (vitkit train's checkpoint.pt or similar): the model's "
                         f"weights under 'model' (listed below; loading the file loads them), plus {rest}. "
                         "`vitkit train --resume` continues from it; the run's best/ and last/ folders hold the "
                         "exported model with its preprocessing.")
        lines += [
                 f"format:       {self.format or 'unknown'}",
                 f"architecture: {self.architecture()}",
                 f"tensors:      {len(self.tensors)} ({dtypes}), {self.num_params:,} parameters"]
        if self.numerics:
            lines.append(f"numerics:     {self.numerics.removeprefix('numerics: ')}")
        lines += [f"note:         {p}" for p in self.problems]
        ordered = self.in_natural_order()
        shown = ordered if limit is None else ordered[:limit]
        width = max((len(n) for n, _, _ in shown), default=4) + 2
        lines.append("")
        lines.append(f"{'name':<{width}}{'shape':<24}dtype")
        lines += [f"{n:<{width}}{str(s):<24}{d}" for n, s, d in shown]
        if len(shown) < len(self.tensors):
            lines.append(f"... and {len(self.tensors) - len(shown)} more (--all lists them)")
        return "\n".join(lines)


def _natural_key(name: str) -> list[Any]:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _not_a_checkpoint(path: Path, exc: CheckpointError) -> CheckpointError:
    """A clearer error for common files that are not weights (an image, a config), else ``exc`` itself."""
    name = str(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return CheckpointError(f"{name!r} is an image, not a checkpoint. `vitkit weights` lists a weight file's "
                               f"tensors; to run a model on this image use `vitkit predict {name} --model ...`.")
    if path.suffix.lower() == ".json":
        return CheckpointError(f"{name!r} is a JSON file, not a checkpoint. Pass the weight file (.safetensors, "
                               f".pth/.bin, .npz) or the folder that holds it with its config.json.")
    return exc


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
    try:
        ckpt = read_checkpoint(source)
    except CheckpointError as exc:
        raise _not_a_checkpoint(Path(os.fspath(source)), exc) from None
    inv = Inventory(path=os.fspath(ckpt.path), kind=ckpt.kind,
                    tensors=[(k, *tensor_info(ckpt.tensors, k)) for k in ckpt.tensors])
    inv.training_state = ckpt.training_state
    if ckpt.training_state is not None:
        inv.file_bytes = Path(ckpt.path).stat().st_size
    try:
        family = detect_format(ckpt, format)
        inv.format = family.name
        converted = family.convert(_shapes_only(ckpt, inv.tensors))
        inv.config = stated_config(converted, known, inv.path)
        inv.pretrained_cfg = pretrained_cfg_for(converted, inv.config, inv.path)
        inv.matches, inv.also_matches = _matches(inv.config, known, stated=converted.model_name)
        inv.numerics = family.numerics.line(inv.config, converted.hints)
    except VitkitError as exc:
        inv.problems.append(str(exc))
        inv.errors.append(exc)
    return inv


def _matches(config: ViTConfig, known: Known | None, *, stated: str | None) -> tuple[str | None, list[str]]:
    """The registered name to show for ``config`` and the others of the same architecture. A DeiT and a plain
    ViT of one size are the same architecture: the name the checkpoint states wins, then a plain 'vit_' name
    (so a plain ViT file is not called DeiT), then the first in order."""
    same = [n for n in sorted(known or {}) if match_known(config, {n: known[n]})]  # type: ignore[index]
    if not same:
        return None, []
    preferred = [n for n in same if n == stated] + [n for n in same if n.startswith("vit_")] + same
    return preferred[0], [n for n in same if n != preferred[0]]
