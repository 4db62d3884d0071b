"""Writing weight files and their JSON companions, atomically (a reader never sees half a file).

safetensors files carry vitkit's per-tensor checksums (``checksums.py``); ``.npz`` files hold float32 where
numpy has no bfloat16.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..fileio import atomic_write
from .checksums import CRC_KEY, crc_record


def cpu_state(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies (views where possible) ready to be written."""
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def write_safetensors(tensors: Mapping[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save_file

    state = cpu_state(tensors)
    crcs = json.dumps({k: crc_record(v) for k, v in state.items()})
    meta = {"format": "pt", **(metadata or {}), CRC_KEY: crcs}
    return atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=meta))


def write_npz(tensors: Mapping[str, torch.Tensor], path: Path) -> Path:
    arrays = {}
    for k, v in cpu_state(tensors).items():
        if v.dtype == torch.bfloat16:  # numpy has no bfloat16
            v = v.float()
        arrays[k] = v.numpy()

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    return atomic_write(path, write)


def write_json(data: dict[str, Any], path: Path) -> Path:
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
