"""Safe reading of weight files (their writers: ``writers.py``; their checksums: ``checksums.py``).

Nothing here unpickles arbitrary objects: safetensors are memory-mapped, torch files are read with
``torch.load(weights_only=True, mmap=True)``, numpy files with ``allow_pickle=False``. The kind of a
file is told by its first bytes, not its name. Every failure a user can cause is a ``CheckpointError``
naming the file, what was expected and what to do.
"""

from __future__ import annotations

import logging
import os
import pickle
import struct
import zipfile
import zlib
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, CorruptCheckpointError, UnsafeCheckpointError
from . import validate
from .checksums import CRC_KEY, verify_crc
from .sources import EXPECTED, resolve_source
from .validate import corrupt

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".npz")
# Files a checkpoint folder may hold its weights in, in order of preference
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json", "open_clip_model.safetensors", "open_clip_pytorch_model.bin")
# Keys under which training checkpoints nest the model's state dict
TRAINING_KEYS = ("optimizer", "scheduler", "progress", "epoch", "scaler", "train_config")
NESTED_STATE_KEYS = ("state_dict", "model", "module", "model_state_dict")


@dataclass
class Checkpoint:
    """What was read from a weight source, before any interpretation."""

    path: Path  # the file or folder given
    kind: str  # "safetensors" | "torch" | "npz" (of the weight files)
    tensors: Mapping[str, torch.Tensor]
    files: list[Path] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)  # safetensors header metadata
    config: dict[str, Any] | None = None  # config.json next to the weights
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)  # other JSON files (preprocessor_config.json)
    # a training checkpoint's top-level keys (its model's weights are the tensors, read from under 'model')
    training_state: list[str] | None = None


class TensorView(Mapping[str, torch.Tensor]):
    """A read-on-access mapping of tensors whose names (``_names``: name -> where to find it) are known
    up front; subclasses define ``__getitem__`` and ``header``."""

    _names: dict[str, Any]

    @abstractmethod
    def header(self, key: str) -> tuple[tuple[int, ...], str]:
        """(shape, dtype name) of one tensor, without reading its data where the source allows."""

    def __contains__(self, key: object) -> bool:
        return key in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class RenamedView(TensorView):
    """A view of a mapping under other names (``names``: new name -> stored name); no tensor is read."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], names: dict[str, str]) -> None:
        self._tensors, self._names = tensors, names

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._tensors[self._names[key]]

    def header(self, key: str) -> tuple[tuple[int, ...], str]:
        return tensor_info(self._tensors, self._names[key])


class NpzTensors(TensorView):
    """The arrays of an .npz file as tensors, read one at a time on access (never pickled)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        zf = validate.open_zip(path, "npz")
        validate.check_zip(path, zf, "npz")
        self._headers = {info.filename.removesuffix(".npy"): self._read_header(zf, info) for info in zf.infolist()}
        try:
            self._npz = np.load(path, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise _unreadable(path, "npz", exc) from None
        self._names = dict.fromkeys(self._npz.files)

    def _read_header(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple[int, ...], str]:
        """(shape, dtype) of one member from its .npy header, checked against the member's declared size."""
        if not info.filename.endswith(".npy"):
            raise corrupt(self.path, "npz", f"member {info.filename!r} is not an .npy array")
        try:
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read(f)
                header_len = f.tell()
        # numpy's header parser (literal_eval of a dict, through tokenize) reports damage in many exception
        # types (ValueError, SyntaxError, TokenError, MemoryError on absurd nesting): at this parser boundary,
        # all mean a damaged header
        except Exception as exc:
            raise corrupt(self.path, "npz", f"the .npy header of {info.filename!r} is damaged "
                                            f"({type(exc).__name__}: {exc})") from None
        validate.check_npy_header(self.path, info.filename, shape, dtype, info.file_size - header_len)
        return tuple(shape), "bfloat16" if validate.is_bfloat16(dtype) else str(dtype)

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._names:
            raise KeyError(key)
        try:  # headers were checked in __init__; what is left is damaged data (a failed CRC, a bad stream)
            array = self._npz[key]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise _unreadable(self.path, "npz", exc) from None
        if validate.is_bfloat16(array.dtype):  # JAX's bf16, saved by numpy as raw 2-byte records (|V2)
            return torch.from_numpy(np.ascontiguousarray(array).view(np.uint16)).view(torch.bfloat16)
        if array.dtype.hasobject or array.dtype.kind not in "fiub":  # a header check missed: never hand it on
            raise UnsafeCheckpointError(f"{self.path}: array {key!r} has dtype {array.dtype}, expected numbers.")
        return torch.from_numpy(np.ascontiguousarray(array))

    def header(self, key: str) -> tuple[tuple[int, ...], str]:
        """(shape, dtype name) of an array, from its .npy header only (read when the file was opened)."""
        return self._headers[key]


def tensor_info(tensors: Mapping[str, torch.Tensor], key: str) -> tuple[tuple[int, ...], str]:
    """(shape, dtype name) of one tensor, without reading an .npz array's data."""
    if isinstance(tensors, TensorView):
        return tensors.header(key)
    t = tensors[key]
    return tuple(t.shape), str(t.dtype).removeprefix("torch.")


# ---------------------------------------------------------------------- errors
def _unreadable(path: Path, kind: str, exc: BaseException) -> CheckpointError:
    return CorruptCheckpointError(
        f"Cannot read {path} as a {kind} file: {type(exc).__name__}: {exc}. The file is truncated or corrupt "
        f"(an interrupted download or copy?). Download or copy it again; its size is {_size(path)}.")


def _size(path: Path) -> str:
    try:
        return f"{path.stat().st_size:,} bytes"
    except OSError:
        return "unknown"


# ---------------------------------------------------------------------- reading
def sniff(path: Path) -> str:
    """The kind of a weight file from its first bytes: 'safetensors', 'torch', 'npz' or 'unknown'."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] > 1:
        return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except Exception:  # any damage to the zip directory (bad names raise UnicodeDecodeError): the reader reports it
            return "torch" if path.suffix != ".npz" else "npz"
        return "npz" if any(n.endswith(".npy") for n in names) else "torch"
    if head[:1] == b"\x80":  # a pickle: torch's legacy format, read only through weights_only
        return "torch"
    return "unknown"


def read_checkpoint(source: str | os.PathLike[str]) -> Checkpoint:
    """Read a weight source (file, folder or ``hf-hub:`` id) without interpreting its names."""
    path = resolve_source(source)
    if path.is_dir():
        return _read_dir(path)
    return read_weight_file(path)


def read_weight_file(path: Path) -> Checkpoint:
    validate.check_regular_file(path)
    kind = sniff(path)
    readers: dict[str, Callable[[Path], Checkpoint]] = {
        "safetensors": _read_safetensors, "torch": _read_torch, "npz": _read_npz}
    if kind not in readers:  # its bytes are not echoed: it may be a file the user did not name (a shard)
        raise CheckpointError(f"{path} ({_size(path)}) is not a weight file vitkit can read: it starts with none of "
                              f"the safetensors, zip or pickle signatures. Expected {EXPECTED}.")
    return readers[kind](path)


def _read_safetensors(path: Path) -> Checkpoint:
    from safetensors import SafetensorError, safe_open

    validate.check_safetensors_header(path)
    try:
        with safe_open(str(path), framework="pt") as f:  # memory-mapped: nothing is copied yet
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _unreadable(path, "safetensors", exc) from None
    if CRC_KEY in metadata:
        verify_crc(path, tensors, metadata.pop(CRC_KEY))
    return Checkpoint(path=path, kind="safetensors", tensors=tensors, files=[path], metadata=metadata)


def _read_torch(path: Path) -> Checkpoint:
    if zipfile.is_zipfile(path):
        with validate.open_zip(path, "torch") as zf:
            validate.check_zip(path, zf, "torch")
            validate.verify_zip_crc(path, zf, "torch")
    try:
        obj = _torch_load(path, mmap=True)
    except RuntimeError:  # _torch_load lets through only mmap's refusal: the legacy (non-zip) format
        obj = _torch_load(path, mmap=False)
    if is_training_state(obj):
        return _training_checkpoint(obj, path)
    return Checkpoint(path=path, kind="torch", tensors=_state_dict_of(obj, path), files=[path])


def is_training_state(obj: Any) -> bool:
    """A training checkpoint (``vitkit train``'s checkpoint.pt or similar): the model's weights under 'model'
    beside optimizer state, progress, ..."""
    return isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping) \
        and any(k in obj for k in TRAINING_KEYS)


def _training_checkpoint(obj: Mapping[str, Any], path: Path) -> Checkpoint:
    """The model a training checkpoint holds: the weights under 'model'; a vitkit run's ``model_config``
    (and ``pretrained_cfg``, ``classes``) as the vitkit description its exported folders carry."""
    logger.info("%s is a training checkpoint: using the model's weights under 'model'", path)
    config = None
    if isinstance(obj.get("model_config"), dict):
        train = obj.get("train_config") if isinstance(obj.get("train_config"), dict) else {}
        pcfg = obj.get("pretrained_cfg")
        if not isinstance(pcfg, dict):  # written before the state kept it: the run's folders hold it
            logger.warning("%s does not store the run's preprocessing (defaults used); the run's best/ folder "
                           "holds it", path)
            pcfg = {}
        pcfg = dict(pcfg)
        if isinstance(obj.get("classes"), list) and pcfg.get("label_names") is None:
            pcfg["label_names"] = list(obj["classes"])
        config = {"format": "vitkit", "config": obj["model_config"], "pretrained_cfg": pcfg,
                  "model_name": train.get("model") if isinstance(train.get("model"), str) else None}
        validate.check_config_json(config, f"{path} (its model_config)")
    return Checkpoint(path=path, kind="torch", tensors=_state_dict_of(obj["model"], path), files=[path],
                      config=config, training_state=[str(k) for k in obj])


def _torch_load(path: Path, *, mmap: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        detail = str(exc).split("\n\n")[1] if "\n\n" in str(exc) else str(exc)
        raise CheckpointError(
            f"Refused to load {path}: it holds pickled Python objects besides tensors ({detail.strip()[:300]}). "
            "vitkit reads weights only and never runs code from a checkpoint. If you trust the file, "
            "re-save just its tensors: torch.save(obj['state_dict'], 'weights.pth') or use safetensors.") from None
    except RuntimeError as exc:
        if mmap and "mmap" in str(exc):
            raise
        raise _unreadable(path, "torch", exc) from None
    # torch's restricted unpickler reports a damaged pickle stream in many types (UnicodeDecodeError,
    # ValueError, KeyError, IndexError, struct.error, ...): at this parser boundary, all mean a corrupt file
    except Exception as exc:
        raise _unreadable(path, "torch", exc) from None


def _state_dict_of(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a torch file: a state dict, possibly nested in a training checkpoint."""
    for _ in range(3):
        if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            nested = next((obj[k] for k in NESTED_STATE_KEYS if isinstance(obj.get(k), Mapping)), None)
            if nested is not None:
                obj = nested
                continue
        break
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, expected a dict of tensors (a state dict). "
                              "Save the model with torch.save(model.state_dict(), path).")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path} holds a dict with no tensors (keys: {', '.join(map(str, list(obj)[:10]))}). "
                              "Expected a state dict of the model's weights.")
    return tensors


def _read_npz(path: Path) -> Checkpoint:
    return Checkpoint(path=path, kind="npz", tensors=NpzTensors(path), files=[path])


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path`` (bounded in size and depth; a CheckpointError on any damage)."""
    return validate.read_json_file(path)


def _weight_files(folder: Path) -> tuple[list[Path], dict[str, str] | None]:
    """The weight files of a folder, and a sharded checkpoint's index (tensor name -> shard file)."""
    for name in WEIGHT_FILES:
        path = folder / name
        if path.exists():
            if name.endswith(".index.json"):  # sharded: the index names the shards, each inside the folder
                index = read_json(path)
                shards = validate.shard_names(index, path)
                return [validate.inside_folder(folder, s, f"The index {path}") for s in shards], index["weight_map"]
            return [path], None
    found = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if len(found) == 1:
        return found, None
    listing = ", ".join(p.name for p in sorted(folder.iterdir())[:20]) or "nothing"
    what = "several weight files" if found else "no weight file"
    raise CheckpointError(f"Folder {folder} holds {what} ({listing}). Expected one of {', '.join(WEIGHT_FILES)} "
                          "or a single .safetensors/.pth/.bin/.npz file; pass the file itself if there are several.")


def _read_dir(folder: Path) -> Checkpoint:
    files, index = _weight_files(folder)
    parts = [read_weight_file(p) for p in files]
    tensors: dict[str, torch.Tensor] = {}
    metadata: dict[str, str] = {}
    for part in parts:
        tensors.update(part.tensors)
        metadata.update(part.metadata)
    absent = sorted(set(index or ()) - set(tensors))
    if absent:
        raise CorruptCheckpointError(
            f"{folder}: the index lists {len(absent)} tensor(s) no shard holds ({', '.join(absent[:5])}). A shard is "
            "missing, truncated or from another checkpoint; download the checkpoint again.")
    config = read_json(folder / "config.json") if (folder / "config.json").exists() else None
    if config is not None:
        validate.check_config_json(config, str(folder / "config.json"))
    extra = {p.name: read_json(p) for p in sorted(folder.glob("*.json"))
             if p.name != "config.json" and not p.name.endswith(".index.json")}
    if "preprocessor_config.json" in extra:
        validate.check_preprocessor_json(extra["preprocessor_config.json"], str(folder / "preprocessor_config.json"))
    return Checkpoint(path=folder, kind=parts[0].kind, tensors=tensors, files=files, metadata=metadata,
                      config=config, extra=extra)
