"""Per-tensor checksums of the safetensors files vitkit writes.

safetensors has no checksum of its own: vitkit's writer records each tensor's CRC-32 with its dtype and shape
in the file's metadata, and the reader checks every tensor that is still as it was written, so damaged bytes
are refused while a deliberate rewrite (another dtype, a dropped tensor) loads.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import CorruptCheckpointError
from . import validate
from .validate import corrupt

# safetensors has no checksum: vitkit's writer stores each tensor's CRC-32 in the metadata, and checks it on reading
CRC_KEY = "vitkit_crc32"


def tensor_crc(t: torch.Tensor) -> int:
    """CRC-32 of a tensor's bytes (as stored: contiguous, native byte order)."""
    return zlib.crc32(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy())


def crc_record(t: torch.Tensor) -> list[Any]:
    """What the writer records of a tensor: [CRC-32, dtype name, shape]. The dtype and shape tell a deliberate
    rewrite (another dtype, a reshaped tensor) from damaged bytes, which keep both."""
    return [tensor_crc(t), str(t.dtype).removeprefix("torch."), list(t.shape)]


def verify_crc(path: Path, tensors: Mapping[str, torch.Tensor], recorded: str) -> None:
    """Check each tensor that is still as it was written (same dtype and shape) against its CRC-32.

    A tensor that is gone is left to the loader (which reports it missing); one with another dtype or shape
    was rewritten on purpose (a re-save after ``.half()``), so its old checksum says nothing about it. Files
    written before dtype and shape were recorded hold plain CRCs, checked as they are."""
    crcs = validate.load_json_text(recorded, f"the {CRC_KEY} metadata of {path}")
    if not isinstance(crcs, dict):
        raise corrupt(path, "safetensors", f"its {CRC_KEY} metadata is not an object")
    for name, entry in crcs.items():
        if name not in tensors:
            continue
        crc, dtype, shape = (entry, None, None) if not isinstance(entry, list) or len(entry) != 3 else entry
        t = tensors[name]
        if dtype is not None and (dtype != str(t.dtype).removeprefix("torch.") or shape != list(t.shape)):
            continue
        if tensor_crc(t) != crc:
            raise CorruptCheckpointError(
                f"{path}: tensor {name!r} fails its CRC-32 check: its bytes changed after saving (a damaged download "
                "or copy?); download or copy the file again. If you changed its values on purpose, save the "
                f"tensors without the {CRC_KEY!r} metadata entry, or save the model with vitkit.save_pretrained.")
