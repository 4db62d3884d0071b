"""Hand-made hostile checkpoints: forged headers, pickles, zip bombs, hostile indexes, special files,
NaN/Inf, wrong dtypes and shapes. Each is one ``Case`` (see corpus.py)."""

from __future__ import annotations

import json
import os
import shutil
import struct
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from corpus import Bases, Case, tiny_model
from safetensors.torch import load_file

import vitkit

Make = Callable[[], dict[str, Any]]


def _case(cid: str, category: str, expect: str, make: Make, action: str = "load", **kw: Any) -> Case:
    return Case(cid, category, action, expect, make, **kw)


# ---------------------------------------------------------------------- safetensors headers
def _split_safetensors(path: Path) -> tuple[dict[str, Any], bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _write_safetensors(path: Path, header: Any, data: bytes, length: int | None = None) -> None:
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob) if length is None else length) + blob + data)


def safetensors_cases(bases: Bases, root: Path) -> Iterator[Case]:
    header, data = _split_safetensors(bases.root / "vitkit.safetensors")
    name = next(k for k in header if k != "__metadata__" and header[k]["shape"] and len(header[k]["shape"]) == 2)
    edits: dict[str, Callable[[dict[str, Any]], Any]] = {}
    for dtype in ("I32", "I64", "BOOL", "F16", "F64", "U8", "XYZ", 5, None, "C64"):
        edits[f"dtype={dtype}"] = lambda h, d=dtype: h[name].update(dtype=d)
    for shape in ([], [10**12], [-1], "x", [1.5], [2**62, 2**62], None, [0]):
        edits[f"shape={str(shape)[:20]}"] = lambda h, s=shape: h[name].update(shape=s)
    edits["shape=reversed"] = lambda h: h[name].update(shape=h[name]["shape"][::-1])
    edits["shape=extra-dim"] = lambda h: h[name].update(shape=h[name]["shape"] + [1])
    for offsets in ([0, 10**15], [5, 1], "x", [0], [-1, 3], None, [0, 0]):
        edits[f"offsets={offsets}"] = lambda h, o=offsets: h[name].update(data_offsets=o)
    edits["entry=list"] = lambda h: h.__setitem__(name, [1, 2])
    edits["meta=int"] = lambda h: h.__setitem__("__metadata__", {"a": 1})
    edits["meta=str"] = lambda h: h.__setitem__("__metadata__", "x")
    for label, text in (("not-json", "{"), ("list", "[]"), ("config-list", '{"config": []}'),
                        ("depth-huge", json.dumps({"format": "vitkit", "config": {**_config(), "depth": 10**6}})),
                        ("embed-huge", json.dumps({"format": "vitkit", "config": {**_config(), "embed_dim": 10**9}})),
                        ("classes-huge", json.dumps({"format": "vitkit",
                                                     "config": {**_config(), "num_classes": 10**9}})),
                        ("classes-big", json.dumps({"format": "vitkit",
                                                    "config": {**_config(), "num_classes": 10**5}})),
                        ("pcfg-list", json.dumps({"format": "vitkit", "config": _config(), "pretrained_cfg": [1]})),
                        ("depth-str", json.dumps({"format": "vitkit", "config": {**_config(), "depth": "2"}}))):
        edits[f"vitkit-meta={label}"] = lambda h, t=text: h["__metadata__"].update(vitkit=t)
    edits["crc=list"] = lambda h: h["__metadata__"].update(vitkit_crc32="[]")
    edits["crc=wrong"] = lambda h: h["__metadata__"].update(vitkit_crc32=json.dumps({name: 1}))
    for label, edit in edits.items():
        yield _case(f"safetensors/{label}", "headers:safetensors", "either", _st_edit(bases, root, label, edit))
    raw = {"len=0": (b"{}", 0), "len=huge": (b"{}", 2**63), "len=past-end": (None, 10**9),
           "header=deep": (b"[" * 100_000 + b"]" * 100_000, None), "header=list": (b"[]", None),
           "header=utf8": (b'{"\xff": 1}', None)}
    for label, (blob, length) in raw.items():
        yield _case(f"safetensors/{label}", "headers:safetensors", "error",
                    _st_raw(bases, root, label, blob, length, data))


def _config() -> dict[str, Any]:
    return tiny_model().config.to_dict()


def _st_edit(bases: Bases, root: Path, label: str, edit: Callable[[dict[str, Any]], Any]) -> Make:
    def make() -> dict[str, Any]:
        header, data = _split_safetensors(bases.root / "vitkit.safetensors")
        edit(header)
        path = root / "st" / f"{label.replace('/', '_')}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_safetensors(path, header, data)
        return {"path": str(path), "ref": bases.ref}
    return make


def _st_raw(bases: Bases, root: Path, label: str, blob: bytes | None, length: int | None, data: bytes) -> Make:
    def make() -> dict[str, Any]:
        path = root / "st" / f"raw-{label}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        header, _ = _split_safetensors(bases.root / "vitkit.safetensors")
        _write_safetensors(path, blob if blob is not None else header, data, length)
        return {"path": str(path)}
    return make


# ---------------------------------------------------------------------- npz
def _npy_bytes(header: dict[str, Any], payload: bytes) -> bytes:
    text = repr(header).encode()
    text += b" " * (63 - (len(text) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + payload


def _npz_with(path: Path, members: dict[str, bytes], base: Path | None = None, compress: bool = False) -> None:
    mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", mode) as zf:
        if base is not None:
            with zipfile.ZipFile(base) as src:
                for info in src.infolist():
                    if info.filename not in members:
                        zf.writestr(info.filename, src.read(info))
        for name, blob in members.items():
            zf.writestr(name, blob)


def npz_cases(bases: Bases, root: Path) -> Iterator[Case]:
    base = bases.root / "model.npz"
    kernel = "Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel.npy"
    obj = np.array([{"a": 1}], dtype=object)
    specials: dict[str, dict[str, bytes]] = {
        "pickle-member": {kernel: _npy_bytes({"descr": "|O", "fortran_order": False, "shape": (1,)},
                                             b"\x80\x04K\x01.")},
        "not-npy-member": {"readme.txt": b"hello"},
        "huge-claim": {kernel: _npy_bytes({"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)}, b"")},
        "short-data": {kernel: _npy_bytes({"descr": "<f4", "fortran_order": False, "shape": (16, 64)}, b"\0" * 10)},
        "unicode-dtype": {kernel: _npy_bytes({"descr": "<U4", "fortran_order": False, "shape": (2,)}, b"\0" * 32)},
        "datetime-dtype": {kernel: _npy_bytes({"descr": "<M8[s]", "fortran_order": False, "shape": (2,)}, b"\0" * 16)},
        "struct-dtype": {kernel: _npy_bytes({"descr": [("a", "<f4")], "fortran_order": False, "shape": (2,)},
                                            b"\0" * 8)},
        "bad-header": {kernel: b"\x93NUMPY\x01\x00" + struct.pack("<H", 20) + b"{'descr': __import__"},
        "negative-shape": {kernel: _npy_bytes({"descr": "<f4", "fortran_order": False, "shape": (-1, 4)}, b"")},
        "scalar-kernel": {kernel: _npy_bytes({"descr": "<f4", "fortran_order": False, "shape": ()}, b"\0" * 4)},
        "complex": {kernel: _npy_bytes({"descr": "<c8", "fortran_order": False, "shape": (16, 64)}, b"\0" * 8192)},
        "int-kernel": {kernel: _npy_bytes({"descr": "<i4", "fortran_order": False, "shape": (16, 64)}, b"\0" * 4096)},
    }
    for label, members in specials.items():
        yield _case(f"npz/{label}", "special:npz", "error", _npz_make(root, label, members, base))
    yield _case("npz/object-array-savez", "special:npz", "error", _npz_object(root, obj))
    yield _case("npz/zip-bomb", "special:npz", "error", _npz_bomb(root, base, kernel))
    yield _case("npz/empty", "special:npz", "error", _npz_make(root, "empty", {}, None))


def _npz_make(root: Path, label: str, members: dict[str, bytes], base: Path | None) -> Make:
    def make() -> dict[str, Any]:
        path = root / "npz" / f"{label}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        _npz_with(path, members, base)
        return {"path": str(path)}
    return make


def _npz_object(root: Path, obj: np.ndarray) -> Make:
    def make() -> dict[str, Any]:
        path = root / "npz" / "object.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **{"embedding/kernel": obj})
        return {"path": str(path)}
    return make


def _npz_bomb(root: Path, base: Path, kernel: str) -> Make:
    """A member whose 2.4 GB of zeros deflate to ~2.4 MB, under a valid header: only the ratio gives it away."""
    def make() -> dict[str, Any]:
        path = root / "npz" / "bomb.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        n = 600 * 2**20
        header = _npy_bytes({"descr": "<f4", "fortran_order": False, "shape": (16, n // 16)}, b"")
        with zipfile.ZipFile(base) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for info in src.infolist():
                if info.filename != kernel:
                    zf.writestr(info.filename, src.read(info))
            with zf.open(kernel, "w", force_zip64=True) as f:
                f.write(header)
                zeros = bytes(2**24)
                for _ in range(n * 4 // len(zeros)):
                    f.write(zeros)
        return {"path": str(path)}
    return make


# ---------------------------------------------------------------------- torch files
class _Exploit:
    """A pickle that would create a marker file if unpickled by a loader that runs code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def torch_cases(bases: Bases, root: Path) -> Iterator[Case]:
    state = tiny_model().state_dict()
    objects: dict[str, tuple[str, Callable[[Path], Any]]] = {
        "exploit": ("error", lambda p: {"a": _Exploit(str(p.parent / "PWNED")), **state}),
        "list": ("error", lambda p: [state["cls_token"]]),
        "no-tensors": ("error", lambda p: {"a": 1, "b": "x"}),
        "nested": ("ok", lambda p: {"epoch": 3, "state_dict": state}),
        "int-tensor": ("error", lambda p: {**state, "head.weight": state["head.weight"].to(torch.int32)}),
        "bool-tensor": ("error", lambda p: {**state, "head.bias": state["head.bias"] > 0}),
        "nan": ("error", lambda p: {**state, "head.weight": state["head.weight"].clone().fill_(float("nan"))}),
        "inf": ("error", lambda p: {**state, "pos_embed": state["pos_embed"].clone().fill_(float("inf"))}),
        "scalar-weight": ("error", lambda p: {**state, "blocks.0.attn.qkv.weight": torch.tensor(1.0)}),
        "qkv-not-3": ("error", lambda p: {**state, "blocks.0.attn.qkv.weight": torch.zeros(47, 16)}),
        "missing": ("error", lambda p: {k: v for k, v in state.items() if k != "blocks.1.mlp.fc2.weight"}),
        "extra": ("error", lambda p: {**state, "blocks.7.mlp.fc2.weight": torch.zeros(4, 4)}),
        "fp16": ("either", lambda p: {k: v.half() for k, v in state.items()}),
        "complex": ("error", lambda p: {**state, "head.bias": torch.zeros(3, dtype=torch.complex64)}),
    }
    for label, (expect, build) in objects.items():
        yield _case(f"pth/{label}", "special:torch", expect, _torch_make(root, label, build, bases.ref, False))
    yield _case("pth/legacy-format", "special:torch", "ok",
                _torch_make(root, "legacy", lambda p: state, bases.ref, True))


def _torch_make(root: Path, label: str, build: Callable[[Path], Any], ref: str, legacy: bool) -> Make:
    def make() -> dict[str, Any]:
        folder = root / "pth" / label
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "model.pth"
        torch.save(build(path), path, _use_new_zipfile_serialization=not legacy)
        return {"path": str(path), "ref": ref if label in ("nested", "legacy") else None,
                "marker": str(folder / "PWNED")}
    return make


# ---------------------------------------------------------------------- files that are not files, and indexes
def special_file_cases(bases: Bases, root: Path) -> Iterator[Case]:
    def fifo(name: str, inside: str | None) -> Make:
        def make() -> dict[str, Any]:
            folder = root / "fifo" / name
            if inside:
                target, _ = bases.copy("hf-folder", folder)
                (target / "model.safetensors").unlink()
                os.mkfifo(target / inside)
                return {"path": str(target)}
            folder.mkdir(parents=True)
            os.mkfifo(folder / "model.safetensors")
            return {"path": str(folder / "model.safetensors")}
        return make

    yield _case("fifo/file", "special:files", "error", fifo("file", None), isolate=True)
    yield _case("fifo/in-folder", "special:files", "error", fifo("in-folder", "model.safetensors"), isolate=True)
    yield _case("fifo/config", "special:files", "error", _replace_in_folder(bases, root, "config-fifo", "config.json",
                                                                         "fifo"), isolate=True)
    yield _case("dev/zero", "special:files", "error", lambda: {"path": "/dev/zero"})
    yield _case("dev/null", "special:files", "error", lambda: {"path": "/dev/null"})
    yield _case("proc/self", "special:files", "error", lambda: {"path": "/proc/self/status"})
    yield _case("missing", "special:files", "error", lambda: {"path": str(root / "does-not-exist")})
    yield _case("empty-folder", "special:files", "error", _empty_folder(root))
    yield _case("dir-as-weights", "special:files", "error",
                _replace_in_folder(bases, root, "dir-weights", "model.safetensors", "dir"))
    yield _case("loop-link", "special:files", "error", _loop_link(root))
    yield _case("two-weight-files", "special:files", "error", _two_files(bases, root))


def _replace_in_folder(bases: Bases, root: Path, label: str, file: str, kind: str) -> Make:
    def make() -> dict[str, Any]:
        target, _ = bases.copy("vitkit-folder", root / "repl" / label)
        (target / file).unlink()
        if kind == "fifo":
            os.mkfifo(target / file)
        else:
            (target / file).mkdir()
        return {"path": str(target)}
    return make


def _empty_folder(root: Path) -> Make:
    def make() -> dict[str, Any]:
        (root / "empty").mkdir(parents=True)
        return {"path": str(root / "empty")}
    return make


def _loop_link(root: Path) -> Make:
    def make() -> dict[str, Any]:
        (root / "loop").mkdir(parents=True)
        os.symlink(root / "loop" / "b.safetensors", root / "loop" / "a.safetensors")
        os.symlink(root / "loop" / "a.safetensors", root / "loop" / "b.safetensors")
        return {"path": str(root / "loop" / "a.safetensors")}
    return make


def _two_files(bases: Bases, root: Path) -> Make:
    def make() -> dict[str, Any]:
        folder = root / "two"
        folder.mkdir(parents=True)
        shutil.copy(bases.root / "timm.pth", folder / "a.pth")
        shutil.copy(bases.root / "timm.pth", folder / "b.pth")
        return {"path": str(folder)}
    return make


def index_cases(bases: Bases, root: Path) -> Iterator[Case]:
    edits: dict[str, Callable[[dict[str, Any]], Any]] = {
        "traversal": lambda ix: ix["weight_map"].update(dict.fromkeys(ix["weight_map"], "../../../../etc/passwd")),
        "one-traversal": lambda ix: ix["weight_map"].update({next(iter(ix["weight_map"])): "../../etc/passwd"}),
        "absolute": lambda ix: ix["weight_map"].update({next(iter(ix["weight_map"])): "/etc/passwd"}),
        "missing-shard": lambda ix: ix["weight_map"].update({next(iter(ix["weight_map"])): "shard-9.safetensors"}),
        "shard-is-folder": lambda ix: ix["weight_map"].update({next(iter(ix["weight_map"])): "."}),
        "shard-is-index": lambda ix: ix["weight_map"].update(
            {next(iter(ix["weight_map"])): "model.safetensors.index.json"}),
        "not-string": lambda ix: ix["weight_map"].update({next(iter(ix["weight_map"])): 3}),
        "map-list": lambda ix: ix.update(weight_map=["a"]),
        "map-empty": lambda ix: ix.update(weight_map={}),
        "no-map": lambda ix: ix.pop("weight_map"),
        "ghost-tensor": lambda ix: ix["weight_map"].update({"ghost.weight": "shard-1.safetensors"}),
        "nul-name": lambda ix: ix["weight_map"].update({next(iter(ix["weight_map"])): "shard\x00.safetensors"}),
        "dev-zero": lambda ix: ix["weight_map"].update({next(iter(ix["weight_map"])): "../../../../../dev/zero"}),
    }
    for label, edit in edits.items():
        yield _case(f"index/{label}", "special:index", "error", _index_make(bases, root, label, edit))


def _index_make(bases: Bases, root: Path, label: str, edit: Callable[[dict[str, Any]], Any]) -> Make:
    def make() -> dict[str, Any]:
        target, _ = bases.copy("hf-sharded", root / "index" / label)
        ix_path = target / "model.safetensors.index.json"
        index = json.loads(ix_path.read_text())
        edit(index)
        ix_path.write_text(json.dumps(index))
        return {"path": str(target), "no_echo": "root:"}
    return make


def nonfinite_cases(bases: Bases, root: Path) -> Iterator[Case]:
    """NaN/Inf weights written by each of vitkit's writers must be refused (and load when allowed)."""
    for fmt, suffix in (("vitkit", ""), ("timm", ""), ("hf", ""), ("npz", ".npz")):
        for value in ("nan", "inf", "-inf"):
            yield _case(f"nonfinite/{fmt}-{value}", "special:nonfinite", "error",
                        _nonfinite(root, fmt, suffix, value))
        yield _case(f"nonfinite/{fmt}-allowed", "special:nonfinite", "ok",
                    _nonfinite(root, fmt, suffix, "nan", allow=True))


def _nonfinite(root: Path, fmt: str, suffix: str, value: str, allow: bool = False) -> Make:
    def make() -> dict[str, Any]:
        model = tiny_model()
        with torch.no_grad():
            model.blocks[1].mlp.fc1.weight[3, 5] = float(value)
        path = root / "nonfinite" / f"{fmt}-{value}-{allow}{suffix}"
        vitkit.save_pretrained(model, path, format=fmt)
        return {"path": str(path), "kwargs": {"allow_nonfinite": True} if allow else {}}
    return make


def all_special(bases: Bases, root: Path) -> Iterator[Case]:
    for gen in (safetensors_cases, npz_cases, torch_cases, special_file_cases, index_cases, nonfinite_cases):
        yield from gen(bases, root)


__all__ = ["all_special", "load_file"]
