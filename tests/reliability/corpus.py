"""A generated corpus of hostile inputs for every format vitkit reads, plus images, configs and CLI misuse.

Each ``Case`` names its category, the action the worker runs (``load``, ``inventory``, ``image``, ``config``,
``cli``), what must happen (``expect``: 'error' = a VitkitError; 'ok' = loads, equal to the reference;
'either' = one of the two) and a ``make`` function that writes its files only when the case is selected.
The bulk mutations (truncations, byte flips, zeroed blocks, JSON field swaps) are drawn from a seeded RNG,
so a case id always means the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

import vitkit
from vitkit.config import ViTConfig

# 64 wide with one 64-dim head: the head count is what a file without a config implies
TINY = {"img_size": 16, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 1, "mlp_ratio": 2.0,
        "num_classes": 3}
# Values that do not belong in a JSON config field (each is wrong for most fields)
HOSTILE_VALUES: list[Any] = ["12", [1, 2], {"a": 1}, None, -1, 0, 10**12, 1.5, True, 1e308, "x" * 5000, [[[]]]]


@dataclass
class Case:
    id: str
    category: str
    action: str
    expect: str  # 'error' | 'ok' | 'either'
    make: Callable[[], dict[str, Any]] = field(repr=False)  # writes the files; returns the action's arguments
    bulk: bool = False  # one of many generated mutations (the fast slice samples these)
    isolate: bool = False  # runs alone in its own process (FIFOs)
    checksummed: bool = True  # the format can detect changed bytes (False: third-party safetensors)


def replace_file(file: str, how: str, content: str | bytes = "") -> Callable[[Path], None]:
    """A damage that puts a FIFO, a link to ``content``, a folder or the bytes ``content`` where ``file`` was."""
    def damage(folder: Path) -> None:
        path = folder / file
        if os.path.lexists(path):
            path.unlink()
        if how == "fifo":
            os.mkfifo(path)
        elif how == "link":
            os.symlink(content, path)
        elif how == "folder":
            path.mkdir()
        elif how == "text":
            path.write_bytes(content.encode() if isinstance(content, str) else content)
    return damage


def kept(*paths: Path) -> dict[str, str]:
    """``{path: sha256 of its bytes}``: files a case must leave as they are (the worker checks them after it)."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def tiny_model(**changes: Any) -> vitkit.VisionTransformer:
    torch.manual_seed(0)
    return vitkit.VisionTransformer(ViTConfig(**{**TINY, **changes}))


class Bases:
    """Pristine checkpoints of one tiny model in every format (built once), and the reference state."""

    def __init__(self, root: Path) -> None:
        self.root = root / "bases"
        self.root.mkdir(parents=True)
        model = tiny_model()
        self.ref = str(self.root / "ref.safetensors")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, self.ref)
        r = self.root
        vitkit.save_pretrained(model, r / "vitkit", format="vitkit")
        vitkit.save_pretrained(model, r / "vitkit.safetensors", format="vitkit")
        vitkit.save_pretrained(model, r / "timm", format="timm")
        torch.save(model.state_dict(), r / "timm.pth")
        vitkit.save_pretrained(model, r / "hf", format="hf")
        vitkit.save_pretrained(model, r / "model.npz", format="npz")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, r / "plain.safetensors")
        self._hf_variants(r)
        # (name, weight file inside it or None, is a folder, the format records checksums)
        self.weights = {
            "vitkit-folder": ("vitkit", "model.safetensors", True), "vitkit-file": ("vitkit.safetensors", None, True),
            "timm-folder": ("timm", "model.safetensors", True), "timm-pth": ("timm.pth", None, True),
            "hf-folder": ("hf", "model.safetensors", True),
            # shards as transformers writes them: safetensors without checksums
            "hf-sharded": ("hf-sharded", "shard-1.safetensors", False),
            "hf-bin": ("hf-bin", "pytorch_model.bin", True), "npz": ("model.npz", None, True),
            "plain-safetensors": ("plain.safetensors", None, False)}

    def _hf_variants(self, r: Path) -> None:
        tensors = load_file(r / "hf" / "model.safetensors")
        names = sorted(tensors)
        half = len(names) // 2
        shutil.copytree(r / "hf", r / "hf-sharded")
        (r / "hf-sharded" / "model.safetensors").unlink()
        weight_map = {}
        for i, part in enumerate((names[:half], names[half:]), 1):
            save_file({k: tensors[k] for k in part}, r / "hf-sharded" / f"shard-{i}.safetensors")
            weight_map.update(dict.fromkeys(part, f"shard-{i}.safetensors"))
        index = {"metadata": {}, "weight_map": weight_map}
        (r / "hf-sharded" / "model.safetensors.index.json").write_text(json.dumps(index))
        shutil.copytree(r / "hf", r / "hf-bin")
        (r / "hf-bin" / "model.safetensors").unlink()
        torch.save(tensors, r / "hf-bin" / "pytorch_model.bin")

    def copy(self, name: str, dest: Path) -> tuple[Path, Path]:
        """A private copy of base ``name`` under ``dest``: (what to load, the weight file to mutate)."""
        rel, inner, _ = self.weights[name]
        src = self.root / rel
        target = dest / rel
        if src.is_dir():
            shutil.copytree(src, target)
            return target, target / inner
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, target)
        return target, target


# ---------------------------------------------------------------------- byte mutations of weight files
def _mutate(path: Path, how: str, at: int, rng: random.Random) -> None:
    data = bytearray(path.read_bytes())
    at = min(at, max(len(data) - 1, 0))
    if how == "truncate":
        del data[at:]
    elif how == "flip":
        data[at] ^= rng.randrange(1, 256)
    elif how == "zero":
        data[at:at + 4096] = bytes(len(data[at:at + 4096]))
    path.write_bytes(bytes(data))


def weight_cases(bases: Bases, root: Path, rng: random.Random) -> Iterator[Case]:
    for name, (rel, inner, checksummed) in bases.weights.items():
        size = (bases.root / rel / inner if inner else bases.root / rel).stat().st_size
        yield Case(f"{name}/pristine", f"weights:{name}", "load", "ok", _pristine(bases, root, name))
        fixed = [0, 1, 4, 8, 9, 16, 64, 200, size // 4, size // 2, 3 * size // 4, size - 100, size - 1]
        plan = [("truncate", o) for o in fixed] + [("truncate", rng.randrange(size)) for _ in range(40)]
        plan += [("flip", rng.randrange(size)) for _ in range(120)] + [("zero", rng.randrange(size)) for _ in range(25)]
        for i, (how, at) in enumerate(plan):
            yield Case(f"{name}/{how}-{at}-{i}", f"weights:{name}", "load", "either",
                       _mutated(bases, root, name, how, at, i), bulk=True, checksummed=checksummed)
            if i % 2 == 0:  # `vitkit weights FILE` reads headers only: a path of its own
                yield Case(f"{name}/inventory-{how}-{at}-{i}", f"inventory:{name}", "inventory", "either",
                           _mutated(bases, root, name, how, at, 10_000 + i), bulk=True)


def _pristine(bases: Bases, root: Path, name: str) -> Callable[[], dict[str, Any]]:
    def make() -> dict[str, Any]:
        target, _ = bases.copy(name, root / "pristine" / name)
        return {"path": str(target), "ref": bases.ref}
    return make


def _mutated(bases: Bases, root: Path, name: str, how: str, at: int, i: int) -> Callable[[], dict[str, Any]]:
    def make() -> dict[str, Any]:
        target, weight = bases.copy(name, root / "mut" / f"{name}-{how}-{i}")
        _mutate(weight, how, at, random.Random(i))
        return {"path": str(target), "ref": bases.ref}
    return make


# ---------------------------------------------------------------------- JSON config mutations
def _json_files(bases: Bases) -> list[tuple[str, str, str]]:
    """(base, json file inside it, dotted key path) for every key of every JSON file of the folder bases."""
    out = []
    for name in ("vitkit-folder", "timm-folder", "hf-folder", "hf-sharded"):
        folder = bases.root / bases.weights[name][0]
        for jf in sorted(folder.glob("*.json")):
            data = json.loads(jf.read_text())
            for key, value in data.items():
                out.append((name, jf.name, key))
                if isinstance(value, dict) and key != "weight_map" and key not in ("id2label", "label2id"):
                    out += [(name, jf.name, f"{key}.{sub}") for sub in value]
    return out


def json_cases(bases: Bases, root: Path) -> Iterator[Case]:
    for name, file, key in _json_files(bases):
        for j, value in enumerate(HOSTILE_VALUES):
            yield Case(f"{name}/{file}:{key}={j}", f"json:{name}", "load", "either",
                       _json_field(bases, root, name, file, key, value, j), bulk=True)
    whole = {"empty": b"", "list": b"[]", "null": b"null", "deep": b"[" * 100_000 + b"]" * 100_000,
             "deep-obj": b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "utf8": b'{"a": "\xff\xfe"}',
             "nan": b'{"hidden_size": NaN}', "half": None, "bigint": b'{"depth": ' + b"9" * 5000 + b"}"}
    for name in ("vitkit-folder", "timm-folder", "hf-folder", "hf-sharded"):
        folder = bases.root / bases.weights[name][0]
        for jf in sorted(folder.glob("*.json")):
            for label, content in whole.items():
                yield Case(f"{name}/{jf.name}:{label}", f"json:{name}", "load", "either",
                           _json_whole(bases, root, name, jf.name, label, content))


def _json_field(bases: Bases, root: Path, name: str, file: str, key: str, value: Any,
                j: int) -> Callable[[], dict[str, Any]]:
    def make() -> dict[str, Any]:
        target, _ = bases.copy(name, root / "json" / f"{name}-{file}-{key}-{j}")
        data = json.loads((target / file).read_text())
        head, _, sub = key.partition(".")
        if sub:
            data[head][sub] = value
        else:
            data[head] = value
        (target / file).write_text(json.dumps(data))
        return {"path": str(target), "ref": bases.ref}
    return make


def _json_whole(bases: Bases, root: Path, name: str, file: str, label: str,
                content: bytes | None) -> Callable[[], dict[str, Any]]:
    def make() -> dict[str, Any]:
        target, _ = bases.copy(name, root / "jsonw" / f"{name}-{file}-{label}")
        text = (target / file).read_bytes()
        (target / file).write_bytes(text[: len(text) // 2] if content is None else content)
        return {"path": str(target), "ref": bases.ref}
    return make
