"""Safe reading and writing of weight files.

Nothing here unpickles arbitrary objects: safetensors are memory-mapped, torch files are read with
``torch.load(weights_only=True, mmap=True)``, numpy files with ``allow_pickle=False``. The kind of a
file is told by its first bytes, not its name. Every failure a user can cause is a ``CheckpointError``
naming the file, what was expected and what to do.
"""

from __future__ import annotations

import json
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

from ..errors import CheckpointError
from ..fileio import atomic_write

logger = logging.getLogger(__name__)

HUB_PREFIX = "hf-hub:"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".npz")
# Files a checkpoint folder may hold its weights in, in order of preference
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json", "open_clip_model.safetensors")
# Keys under which training checkpoints nest the model's state dict
NESTED_STATE_KEYS = ("state_dict", "model", "module", "model_state_dict")
EXPECTED = ("a .safetensors, .pth/.bin (tensors only) or .npz file, a folder with config.json and "
            "model.safetensors, or 'hf-hub:ORG/NAME'")


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


class NpzTensors(TensorView):
    """The arrays of an .npz file as tensors, read one at a time on access (never pickled)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._npz = np.load(path, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise _unreadable(path, "npz", exc) from None
        self._names = dict.fromkeys(self._npz.files)

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._names:
            raise KeyError(key)
        try:
            array = self._npz[key]
        except ValueError as exc:
            if "allow_pickle" in str(exc):
                raise CheckpointError(f"{self.path}: array {key!r} holds pickled Python objects; vitkit reads "
                                      "numeric arrays only and never unpickles. Re-save it as numbers.") from None
            raise _unreadable(self.path, "npz", exc) from None
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise _unreadable(self.path, "npz", exc) from None
        if _is_bfloat16(array.dtype):  # JAX's bf16, saved by numpy as raw 2-byte records (|V2)
            return torch.from_numpy(np.ascontiguousarray(array).view(np.uint16)).view(torch.bfloat16)
        if array.dtype.kind not in "fiub":
            raise CheckpointError(f"{self.path}: array {key!r} has dtype {array.dtype}, expected numbers "
                                  "(float, int or bool). Convert it to float32 before saving.")
        return torch.from_numpy(np.ascontiguousarray(array))

    def header(self, key: str) -> tuple[tuple[int, ...], str]:
        """(shape, dtype name) of an array, from its .npy header only."""
        try:
            with self._npz.zip.open(f"{key}.npy") as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read(f)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise _unreadable(self.path, "npz", exc) from None
        return tuple(shape), "bfloat16" if _is_bfloat16(dtype) else str(dtype)


def _is_bfloat16(dtype: np.dtype) -> bool:
    """numpy has no bfloat16: JAX/big_vision arrays (ml_dtypes.bfloat16) come back from np.load as |V2."""
    return dtype.kind == "V" and dtype.itemsize == 2 and dtype.fields is None


def tensor_info(tensors: Mapping[str, torch.Tensor], key: str) -> tuple[tuple[int, ...], str]:
    """(shape, dtype name) of one tensor, without reading an .npz array's data."""
    if isinstance(tensors, TensorView):
        return tensors.header(key)
    t = tensors[key]
    return tuple(t.shape), str(t.dtype).removeprefix("torch.")


# ---------------------------------------------------------------------- errors
def _unreadable(path: Path, kind: str, exc: BaseException) -> CheckpointError:
    return CheckpointError(
        f"Cannot read {path} as a {kind} file: {type(exc).__name__}: {exc}. The file is truncated or corrupt "
        f"(an interrupted download or copy?). Download or copy it again; its size is {_size(path)}.")


def _size(path: Path) -> str:
    try:
        return f"{path.stat().st_size:,} bytes"
    except OSError:
        return "unknown"


# ---------------------------------------------------------------------- sources
def resolve_source(source: str | os.PathLike[str]) -> Path:
    """A local path for ``source``: an existing file or folder, or a Hub id downloaded to the cache."""
    text = os.fspath(source)
    if text.startswith(HUB_PREFIX):
        return download_from_hub(text[len(HUB_PREFIX):])
    path = Path(text).expanduser()
    if not path.exists():
        raise CheckpointError(f"Weight source {text!r} does not exist. Expected {EXPECTED}.")
    return path


def download_from_hub(repo: str) -> Path:
    """Download a Hub repository's config and weights (safetensors first) and return the local folder."""
    repo_id, _, revision = repo.partition("@")
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id, revision=revision or None,
                                        allow_patterns=["*.json", "*.safetensors"]))
        if not any(folder.glob("*.safetensors")):
            folder = Path(snapshot_download(repo_id, revision=revision or None,
                                            allow_patterns=["*.json", "*.bin", "*.pth", "*.npz"]))
    except Exception as exc:  # network, auth, missing repo: all end in the same advice
        raise CheckpointError(
            f"Could not get {repo_id!r} from the Hugging Face Hub ({type(exc).__name__}: {str(exc).splitlines()[0]}). "
            f"Without network access, download it on a machine that has it: "
            f"`hf download {repo_id} config.json model.safetensors --local-dir {repo_id.split('/')[-1]}` "
            "(`huggingface-cli download` with older huggingface_hub), "
            f"copy that folder here and pass its path as the weight source instead of '{HUB_PREFIX}{repo}'.") from None
    return folder


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
        except (zipfile.BadZipFile, OSError, EOFError):
            return "torch" if path.suffix != ".npz" else "npz"  # let the reader report the damage
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
    kind = sniff(path)
    readers: dict[str, Callable[[Path], Checkpoint]] = {
        "safetensors": _read_safetensors, "torch": _read_torch, "npz": _read_npz}
    if kind not in readers:
        with open(path, "rb") as f:
            head = f.read(16)
        raise CheckpointError(f"{path} is not a weight file vitkit can read (it starts with {head!r}). "
                              f"Expected {EXPECTED}.")
    return readers[kind](path)


def _read_safetensors(path: Path) -> Checkpoint:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:  # memory-mapped: nothing is copied yet
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _unreadable(path, "safetensors", exc) from None
    return Checkpoint(path=path, kind="safetensors", tensors=tensors, files=[path], metadata=metadata)


def _read_torch(path: Path) -> Checkpoint:
    try:
        obj = _torch_load(path, mmap=True)
    except RuntimeError:  # _torch_load lets through only mmap's refusal: the legacy (non-zip) format
        obj = _torch_load(path, mmap=False)
    return Checkpoint(path=path, kind="torch", tensors=_state_dict_of(obj, path), files=[path])


def _torch_load(path: Path, *, mmap: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        detail = str(exc).split("\n\n")[1] if "\n\n" in str(exc) else str(exc)
        raise CheckpointError(
            f"Refused to load {path}: it holds pickled Python objects besides tensors ({detail.strip()[:300]}). "
            "vitkit reads weights only and never runs code from a checkpoint. If you trust the file, "
            "re-save just its tensors: torch.save(obj['state_dict'], 'weights.pth') or use safetensors.") from None
    except (EOFError, OSError, zipfile.BadZipFile) as exc:
        raise _unreadable(path, "torch", exc) from None
    except RuntimeError as exc:
        if mmap and "mmap" in str(exc):
            raise
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
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"Cannot read {path} as JSON: {exc}. Restore the file or delete it.") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds JSON {type(data).__name__}, expected an object.")
    return data


def _weight_files(folder: Path) -> list[Path]:
    for name in WEIGHT_FILES:
        path = folder / name
        if path.is_file():
            if name.endswith(".index.json"):  # sharded: the index names the shards
                shards = sorted(set(read_json(path).get("weight_map", {}).values()))
                return [folder / s for s in shards]
            return [path]
    found = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if len(found) == 1:
        return found
    listing = ", ".join(p.name for p in sorted(folder.iterdir())[:20]) or "nothing"
    what = "several weight files" if found else "no weight file"
    raise CheckpointError(f"Folder {folder} holds {what} ({listing}). Expected one of {', '.join(WEIGHT_FILES)} "
                          "or a single .safetensors/.pth/.bin/.npz file; pass the file itself if there are several.")


def _read_dir(folder: Path) -> Checkpoint:
    files = _weight_files(folder)
    parts = [read_weight_file(p) for p in files]
    tensors: dict[str, torch.Tensor] = {}
    metadata: dict[str, str] = {}
    for part in parts:
        tensors.update(part.tensors)
        metadata.update(part.metadata)
    config = read_json(folder / "config.json") if (folder / "config.json").is_file() else None
    extra = {p.name: read_json(p) for p in sorted(folder.glob("*.json"))
             if p.name != "config.json" and not p.name.endswith(".index.json")}
    return Checkpoint(path=folder, kind=parts[0].kind, tensors=tensors, files=files, metadata=metadata,
                      config=config, extra=extra)


# ---------------------------------------------------------------------- writing
def cpu_state(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies (views where possible) ready to be written."""
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def write_safetensors(tensors: Mapping[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save_file

    state = cpu_state(tensors)
    return atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt", **(metadata or {})}))


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
