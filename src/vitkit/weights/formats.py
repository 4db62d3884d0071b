"""What a checkpoint family is (``Family``) and what converting one gives (``Converted``).

A family is data: how its files are recognised (``signatures``: regexes over tensor names, or a marker
in the metadata/config), which prefixes it strips, its key-mapping table, the numerics of its reference
code (``numerics``), and two small functions: ``hints`` (what its config files say about the
architecture) and ``write``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .mapping import Remapped, Rule, remap
from .numerics import FamilyNumerics
from .readers import Checkpoint, RenamedView

if TYPE_CHECKING:
    from ..model import VisionTransformer

@dataclass
class Converted:
    """A checkpoint under vitkit names, with what its family knows about the architecture."""

    family: str
    state: dict[str, torch.Tensor]
    dropped: list[str] = field(default_factory=list)
    hints: dict[str, Any] = field(default_factory=dict)  # ViTConfig fields the family's files state
    exact: bool = False  # hints are the whole config (vitkit's own format)
    pretrained_cfg: dict[str, Any] | None = None
    model_name: str | None = None
    architecture: str | None = None  # a model name the files state (timm's "architecture"), for known_hints


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    signatures: tuple[str, ...]  # a checkpoint with a tensor name matching one of these belongs here
    rules: tuple[Rule, ...]
    numerics: FamilyNumerics  # how the family's reference code computes with its files
    prefixes: tuple[str, ...] = ()  # stripped from tensor names that start with them
    hints: Callable[[Checkpoint, dict[str, torch.Tensor]], dict[str, Any]] = lambda ckpt, tensors: {}
    prepare: Callable[[Mapping[str, torch.Tensor]], Mapping[str, torch.Tensor]] = lambda tensors: tensors
    pretrained_cfg: Callable[[Checkpoint], dict[str, Any] | None] = lambda ckpt: None  # preprocessing, if stated
    architecture: Callable[[Checkpoint], str | None] = lambda ckpt: None  # a model name the files state
    write: Callable[[VisionTransformer, Path], Path] | None = None
    marker: Callable[[Checkpoint], bool] = lambda ckpt: False  # a definite claim from metadata or config

    def claims(self, ckpt: Checkpoint) -> bool:
        if self.marker(ckpt):
            return True
        patterns = [re.compile(s) for s in self.signatures]
        return any(p.search(k) for k in ckpt.tensors for p in patterns)

    def convert(self, ckpt: Checkpoint) -> Converted:
        """Tensors under vitkit names (lazily read, one at a time) plus the family's hints."""
        tensors = self.prepare(strip_prefixes(ckpt.tensors, self.prefixes))
        hints = self.hints(ckpt, tensors)
        out: Remapped = remap(tensors, self.rules, num_heads=int(hints.get("num_heads", 1)), source=str(ckpt.path))
        return Converted(family=self.name, state=out.tensors, dropped=out.dropped, hints=hints,
                         pretrained_cfg=self.pretrained_cfg(ckpt), architecture=self.architecture(ckpt))


def strip_prefixes(tensors: Mapping[str, torch.Tensor], prefixes: tuple[str, ...]) -> Mapping[str, torch.Tensor]:
    names = {}
    for key in tensors:
        new = next((key[len(p):] for p in prefixes if key.startswith(p)), key)
        names[new] = key
    return RenamedView(tensors, names)
