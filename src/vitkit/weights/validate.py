"""The one validation layer every weight source goes through: headers and files before any tensor data is read,
then the tensors themselves (floating point, finite) before they become a model's weights.

Headers are checked against the file that holds them: a safetensors header's dtypes, shapes and offsets,
an .npz member's .npy header against the member's declared size, a torch zip's members against their
CRC-32, JSON files by type. Sizes are bounded by ``LIMITS`` (override: attributes of ``LIMITS`` or the
environment variable ``VITKIT_CHECKPOINT_LIMITS="max_json_bytes=1e9,max_zip_ratio=1e4"``), so a hostile
header fails in microseconds instead of reaching the allocator.
"""

from __future__ import annotations

import math
import os
import stat
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..checks import (
    Checker,
    boolean,
    int_or_pair,
    integer,
    is_int,
    limits_from_env,
    list_of,
    mapping,
    number,
    optional,
    short,
    string,
)
from ..config import check_fields
from ..errors import CheckpointError, ConfigError, CorruptCheckpointError, Hint, UnsafeCheckpointError

if TYPE_CHECKING:
    import torch
from ..fileio import parse_json

ENV_LIMITS = "VITKIT_CHECKPOINT_LIMITS"


@dataclass
class CheckpointLimits:
    """Upper bounds checked before reading; raise one (``LIMITS.max_json_bytes = ...``) to read a bigger file."""

    max_json_bytes: int = 64 * 2**20  # config.json, index.json, safetensors header (safetensors' own cap: 100 MB)
    max_tensors: int = 1_000_000  # tensors one file may declare
    max_tensor_bytes: int = 2**40  # one tensor's declared size (the file must also hold it)
    max_zip_ratio: float = 1000.0  # uncompressed / compressed size of a zip member (a zip bomb's ratio is ~1e6)
    zip_ratio_floor: int = 64 * 2**20  # members smaller than this may compress better (all-zero tensors do)

    @classmethod
    def from_env(cls) -> CheckpointLimits:
        return limits_from_env(cls(), ENV_LIMITS)


LIMITS = CheckpointLimits.from_env()

# safetensors dtype names -> bytes per element (those torch can hold)
SAFETENSORS_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                      "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


# ---------------------------------------------------------------------- files
def not_a_regular_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as a regular file (it is missing, a folder, a FIFO, a device, a socket),
    or None if it can. Links are followed; nothing is opened (opening a FIFO blocks forever)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
        return f"cannot be opened ({getattr(exc, 'strerror', None) or exc})"
    if stat.S_ISREG(mode):
        return None
    return ("is a folder" if stat.S_ISDIR(mode) else "is a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "is a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "is a socket" if stat.S_ISSOCK(mode)
            else "is not a regular file")


def check_regular_file(path: Path, what: str = "weight file") -> None:
    """Refuse a folder, FIFO, socket or device where a file is read (opening a FIFO blocks forever)."""
    problem = not_a_regular_file(path)
    if problem is None:
        return
    if problem.startswith("cannot"):
        raise CheckpointError(f"Cannot open {what} {path}: {problem.removeprefix('cannot be opened (')[:-1]}. "
                              "Check the path.")
    raise CheckpointError(f"{what.capitalize()} {path} {problem}, expected a regular file. "
                          "Pass the checkpoint file or its folder.")


def inside_folder(folder: Path, name: object, what: str) -> Path:
    """``folder / name`` for a file a checkpoint names, refused unless it is a plain relative path that stays
    inside ``folder`` (an index naming ``../../etc/passwd`` is hostile). The name is never followed."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise CorruptCheckpointError(f"{what} names a file {_short(name)}, expected a file name inside {folder}. "
                                     "Restore the file from its source.")
    path = folder / name
    # judged by the name, not by resolving links: a Hub cache folder's shards are links into its blob store
    if os.path.isabs(name) or os.path.normpath(name).split(os.sep)[0] == "..":
        raise UnsafeCheckpointError(f"{what} names {name!r}, which is outside the checkpoint folder {folder}; "
                                    "vitkit only reads files inside it. Do not use this checkpoint, or fix its index.")
    return path


def _short(value: object) -> str:
    return short(value, 80, "...'")


# ---------------------------------------------------------------------- JSON
def load_json_text(text: str | bytes, source: str) -> Any:
    """Parse JSON, turning every failure (bad syntax, bad UTF-8, nesting too deep, NaN) into a CheckpointError."""
    return parse_json(text, source, error=CorruptCheckpointError, fix="Restore the file from its source or delete it.")


def read_json_file(path: Path) -> dict[str, Any]:
    """A JSON object from a file, bounded in size, never followed through a FIFO."""
    check_regular_file(path, "JSON file")
    size = path.stat().st_size
    if size > LIMITS.max_json_bytes:
        raise CheckpointError(f"{path} is {size:,} bytes, more than the {LIMITS.max_json_bytes:,} a JSON config may "
                              f"have. If it is genuine, raise vitkit.weights.validate.LIMITS.max_json_bytes.")
    try:
        data = load_json_text(path.read_bytes(), str(path))
    except OSError as exc:
        raise CheckpointError(f"Cannot read {path}: {exc}. Check its permissions.") from None
    if not isinstance(data, dict):
        raise CorruptCheckpointError(f"{path} holds JSON {type(data).__name__}, expected an object ({{...}}).")
    return data


# A schema maps a key to a checker (vitkit.checks): it returns what was expected, or None if the value is fine.


def image_size(value: Any, source: str) -> tuple[int, int]:
    """(height, width) of an image size a checkpoint's config states: a positive integer or a pair of them."""
    pair = [value, value] if is_int(value) else value
    if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(is_int(v) and v > 0 for v in pair)):
        raise CorruptCheckpointError(f"{source}: its config states img_size={_short(value)}, expected a positive "
                                     "integer or a pair [height, width] of them. Fix the file's config or re-save "
                                     "the model.")
    return int(pair[0]), int(pair[1])


def int_or_dict(v: Any) -> str | None:
    return None if (is_int(v) and v > 0) or isinstance(v, dict) else "a positive integer or an object"


PRETRAINED_SCHEMA: dict[str, Checker] = {
    "input_size": list_of(integer, "integers"), "mean": list_of(number, "numbers"), "std": list_of(number, "numbers"),
    "crop_pct": number, "crop_mode": string, "interpolation": string, "num_classes": integer}
# config.json of every family, by key (keys of different families do not collide)
CONFIG_SCHEMA: dict[str, Checker] = {
    # Hugging Face transformers
    "architectures": list_of(string, "strings"), "model_type": string, "hidden_size": integer,
    "num_hidden_layers": integer, "num_attention_heads": integer, "num_channels": integer,
    "layer_norm_eps": number, "image_size": int_or_pair, "patch_size": int_or_pair, "hidden_act": string,
    "intermediate_size": integer, "qkv_bias": boolean, "id2label": mapping, "label2id": mapping,
    # timm
    "architecture": string, "num_classes": integer, "num_features": integer, "model_args": mapping,
    # vitkit
    "format": string, "config": mapping, "model_name": optional(string), "vitkit_version": string}
NESTED_SCHEMAS: dict[str, dict[str, Checker]] = {"vision_config": CONFIG_SCHEMA, "pretrained_cfg": PRETRAINED_SCHEMA}
PREPROCESSOR_SCHEMA: dict[str, Checker] = {
    "image_mean": list_of(number, "numbers"), "image_std": list_of(number, "numbers"), "resample": integer,
    "size": int_or_dict, "crop_size": int_or_dict, "do_center_crop": boolean, "do_resize": boolean,
    "do_normalize": boolean, "patch_size": integer, "max_num_patches": integer}
INDEX_SCHEMA: dict[str, Checker] = {"weight_map": mapping, "metadata": mapping}
# Keys real files set to null, meaning "not set" (transformers' nested configs write "architectures": null);
# the readers treat them as absent. A null anywhere else (a width, a depth) is refused.
NULLABLE = frozenset({"architectures", "id2label", "label2id", "model_args", "model_name", "crop_size",
                      "do_center_crop", "resample", "metadata"})


def check_json(data: Mapping[str, Any], schema: Mapping[str, Checker], source: str, prefix: str = "") -> None:
    """Raise a CheckpointError naming the first known key whose value has the wrong type."""
    for key, check in schema.items():
        if key not in data or (key in NULLABLE and data[key] is None):
            continue
        value = data[key]
        expected = check(value)
        if expected is not None:
            raise CorruptCheckpointError(
                f"{source}: field {prefix}{key!r} is {_short(value)} ({type(value).__name__}), expected {expected}. "
                "Fix the file or re-save the checkpoint with the library that made it.")
    for key, nested in NESTED_SCHEMAS.items():
        if key in data and data[key] is not None:
            if not isinstance(data[key], dict):
                raise CorruptCheckpointError(f"{source}: field {prefix}{key!r} is {_short(data[key])}, expected an "
                                             "object ({...}). Fix the file or re-save the checkpoint.")
            check_json(data[key], nested, source, f"{prefix}{key}.")


def check_config_json(data: Mapping[str, Any], source: str) -> None:
    """config.json of any family by type; the ViTConfig fields a timm or vitkit config states, by ViTConfig's
    own rules."""
    check_json(data, CONFIG_SCHEMA, source)
    for key in ("model_args", "config"):
        if isinstance(data.get(key), dict):
            try:
                check_fields(data[key], key)
            except ConfigError as exc:
                raise CorruptCheckpointError(f"{source}: {exc} Fix the file or re-save the checkpoint.") from None


def check_preprocessor_json(data: Mapping[str, Any], source: str) -> None:
    check_json(data, PREPROCESSOR_SCHEMA, source)
    for key in ("size", "crop_size"):
        if isinstance(data.get(key), dict):
            check_json(data[key], {k: integer for k in ("height", "width", "shortest_edge")}, source, f"{key}.")


def shard_names(index: Mapping[str, Any], path: Path) -> list[str]:
    """The shard file names a sharded checkpoint's index lists, checked by type."""
    check_json(index, INDEX_SCHEMA, str(path))
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CorruptCheckpointError(f"{path} has no 'weight_map' (tensor name -> shard file). Restore the index "
                                     "from the checkpoint's source.")
    bad = next((k for k, v in weight_map.items() if not isinstance(v, str)), None)
    if bad is not None:
        raise CorruptCheckpointError(f"{path}: weight_map[{bad!r}] is {_short(weight_map[bad])}, expected a shard "
                                     "file name. Restore the index from the checkpoint's source.")
    return sorted(set(weight_map.values()))


# ---------------------------------------------------------------------- safetensors
def check_safetensors_header(path: Path) -> None:
    """Check a .safetensors header (length, JSON, dtypes, shapes, offsets) against the file, reading no data."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise corrupt(path, "safetensors", f"it is {size} bytes, shorter than the 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, LIMITS.max_json_bytes):
            raise corrupt(path, "safetensors", f"its header claims {n:,} bytes but the file holds {size - 8:,}")
        raw = f.read(n)
    header = load_json_text(raw, f"the header of {path}")
    if not isinstance(header, dict):
        raise corrupt(path, "safetensors", f"its header is JSON {type(header).__name__}, expected an object")
    data_size = size - 8 - n
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    if len(entries) > LIMITS.max_tensors:
        raise corrupt(path, "safetensors", f"it declares {len(entries):,} tensors (limit {LIMITS.max_tensors:,})")
    meta = header.get("__metadata__")
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise corrupt(path, "safetensors", "its __metadata__ is not an object of strings")
    for name, info in entries.items():
        _check_safetensors_entry(path, name, info, data_size)


def _check_safetensors_entry(path: Path, name: str, info: Any, data_size: int) -> None:
    if not isinstance(info, dict):
        raise corrupt(path, "safetensors", f"the header entry of tensor {name!r} is not an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in SAFETENSORS_DTYPES:
        raise CheckpointError(f"{path}: tensor {name!r} has dtype {_short(dtype)}, expected one of "
                              f"{', '.join(SAFETENSORS_DTYPES)}. Convert it to float32 or float16 and save again.")
    if not (isinstance(shape, list) and all(is_int(d) and d >= 0 for d in shape)):
        raise corrupt(path, "safetensors", f"tensor {name!r} has shape {_short(shape)}, expected a list of sizes")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(is_int(o) for o in offsets)):
        raise corrupt(path, "safetensors", f"tensor {name!r} has data_offsets {_short(offsets)}, expected [begin, end]")
    nbytes = math.prod(shape) * SAFETENSORS_DTYPES[dtype]
    begin, end = offsets
    if nbytes > LIMITS.max_tensor_bytes or not 0 <= begin <= end <= data_size or end - begin != nbytes:
        raise corrupt(path, "safetensors", f"tensor {name!r} of shape {tuple(shape)} ({dtype}, {nbytes:,} bytes) "
                                            f"has data_offsets [{begin}, {end}] in a {data_size:,}-byte data section")


# ---------------------------------------------------------------------- zip containers (.npz, torch .pth/.bin)
def check_zip(path: Path, zf: zipfile.ZipFile, kind: str) -> None:
    """Refuse zip bombs (declared sizes, compression ratio) before anything is decompressed."""
    file_size = path.stat().st_size
    for info in zf.infolist():
        if info.file_size > LIMITS.max_tensor_bytes:
            raise corrupt(path, kind, f"member {info.filename!r} declares {info.file_size:,} bytes")
        if info.compress_type == zipfile.ZIP_STORED and info.file_size > file_size:
            raise corrupt(path, kind, f"member {info.filename!r} declares {info.file_size:,} bytes but the file has "
                                       f"{file_size:,}")
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > LIMITS.zip_ratio_floor and ratio > LIMITS.max_zip_ratio:
            raise UnsafeCheckpointError(
                f"{path}: member {info.filename!r} would expand {info.compress_size:,} bytes to {info.file_size:,} "
                f"(x{ratio:,.0f}), a zip bomb's ratio; refused. If you trust the file, raise "
                "vitkit.weights.validate.LIMITS.max_zip_ratio.")


def verify_zip_crc(path: Path, zf: zipfile.ZipFile, kind: str) -> None:
    """Read every member through zipfile, which checks its CRC-32 (torch's own reader does not)."""
    for info in zf.infolist():
        try:
            with zf.open(info) as f:
                while f.read(2**22):
                    pass
        except zipfile.BadZipFile as exc:
            raise corrupt(path, kind, f"member {info.filename!r} fails its check ({exc})") from None
        except (OSError, EOFError, ValueError, NotImplementedError) as exc:
            why = f"member {info.filename!r} cannot be read ({type(exc).__name__}: {exc})"
            raise corrupt(path, kind, why) from None


def open_zip(path: Path, kind: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise corrupt(path, kind, f"its zip directory is damaged ({type(exc).__name__}: {exc})") from None


def is_bfloat16(dtype: Any) -> bool:
    """numpy has no bfloat16: JAX/big_vision arrays (ml_dtypes.bfloat16) come back from np.load as |V2."""
    return dtype.kind == "V" and dtype.itemsize == 2 and dtype.fields is None


def check_npy_header(path: Path, member: str, shape: Any, dtype: Any, data_bytes: int) -> None:
    """An .npy header inside an .npz: numeric dtype, sane shape, and exactly the bytes the member holds."""
    name = member.removesuffix(".npy")
    if dtype.hasobject:
        raise UnsafeCheckpointError(f"{path}: array {name!r} holds pickled Python objects ({dtype}); vitkit reads "
                                    "numeric arrays only and never unpickles. Re-save it as numbers.")
    if (dtype.kind not in "fiub" and not is_bfloat16(dtype)) or dtype.fields is not None \
            or dtype.subdtype is not None:
        raise CheckpointError(f"{path}: array {name!r} has dtype {dtype}, expected numbers (float, int or bool). "
                              "Convert it to float32 before saving.")
    if not (isinstance(shape, tuple) and all(is_int(d) and d >= 0 for d in shape)):
        raise corrupt(path, "npz", f"array {name!r} has shape {_short(shape)}")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes != data_bytes:
        raise corrupt(path, "npz", f"array {name!r} of shape {shape} ({dtype}) needs {nbytes:,} bytes but its "
                                    f"member holds {data_bytes:,}")


# ---------------------------------------------------------------------- messages
def corrupt(path: Path, kind: str, why: str) -> CorruptCheckpointError:
    """The error for a damaged file of ``kind``, naming what is wrong."""
    return CorruptCheckpointError(f"{path} is not a valid {kind} file: {why}. It is truncated or corrupt (an "
                                  "interrupted download or copy?); download or copy it again.")


# ---------------------------------------------------------------------- tensors
# Set to 1 to load weights holding NaN or Inf (refused by default: they are almost always corruption)
ALLOW_NONFINITE_ENV = "VITKIT_ALLOW_NONFINITE"
NONFINITE = Hint(f" To load it anyway, pass allow_nonfinite=True (or set {ALLOW_NONFINITE_ENV}=1).",
                 cli=f" To load it anyway, set {ALLOW_NONFINITE_ENV}=1.")


def check_dtypes(state: dict[str, torch.Tensor], source: str) -> None:
    """Every tensor must be floating point: an integer, boolean or complex weight is a wrong or corrupt file."""
    bad = [(k, v.dtype) for k, v in state.items() if not v.is_floating_point()]
    if bad:
        listed = ", ".join(f"{k} ({str(d).removeprefix('torch.')})" for k, d in bad[:5])
        raise CorruptCheckpointError(f"{source}: {len(bad)} tensor(s) are not floating point: {listed}. Model "
                                     "weights are float32/float16/bfloat16; the file is corrupt or not a model's "
                                     "weights.")


def check_finite(state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse NaN or Inf weights, naming the tensor (opt out: allow_nonfinite=True or VITKIT_ALLOW_NONFINITE=1)."""
    for key, value in state.items():
        if value.is_floating_point() and not bool(value.isfinite().all()):
            bad = int((~value.isfinite()).sum())
            raise CorruptCheckpointError(
                f"{source}: tensor {key!r} holds {bad:,} NaN or Inf value(s) out of {value.numel():,}. The file is "
                f"corrupt or was saved from a diverged run; use an earlier checkpoint.{NONFINITE.text}",
                hints=(NONFINITE,))
