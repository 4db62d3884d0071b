"""Hostile label files (``vitkit train --labels``; ``predict --labels``): bad headers and encodings, fields and
lines beyond the limits, deep JSON, conflicting rows, files that are FIFOs or devices, too many classes, a
few hundred kilobytes naming a class per line (quadratic as dense targets), paths that are URLs, FIFOs or
too long, and class names that try to leave ``--out`` through ``--export-samples``. Every case ends in one
error line, or loads what the file says (odd paths skipped and counted) within the time and memory limits.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corpus import Case
from PIL import Image

CATEGORY = "label files"
Make = Callable[[], dict[str, Any]]
QUADRATIC_ROWS = 20_000  # as dense (K,) targets: 20,000^2 floats = 1.6 GB, beyond the worker's limit
TINY_TRAIN = ["--model", "vit_digits", "--set", "patch_size=8", "--set", "embed_dim=32", "--set", "depth=1",
              "--set", "num_heads=1", "--img-size", "16", "--epochs", "1", "--batch-size", "4", "--workers", "0",
              "--threads", "1", "--no-plots"]


def act_labelfile(case: dict[str, Any]) -> str:
    """Read a label file into training and validation splits and build a batch of targets, as training does."""
    import torch

    from vitkit.data import datasets
    from vitkit.data.labelfiles import is_multi_label, load_label_splits

    limit = datasets.LIMITS.max_classes
    datasets.LIMITS.max_classes = case.get("max_classes", limit)
    try:
        splits = load_label_splits(case["path"], val_fraction=0.25, seed=0)
    finally:
        datasets.LIMITS.max_classes = limit
    batch = [splits.train.labels[i] for i in range(min(4, len(splits.train)))]
    if is_multi_label(splits):
        torch.stack(batch)  # (B, K), the only dense targets there are
    counts = {"images": len(splits.train) + len(splits.val), "skipped": len(splits.skipped),
              "classes": len(splits.classes)}
    return "loaded" if all(counts[k] == case[k] for k in counts if k in case) else "loaded-different"


ACTIONS = {"labelfile": act_labelfile}


class _Images:
    """Six small images and a saved tiny model, made once."""

    def __init__(self, root: Path) -> None:
        self.root, self.folder, self.model = root, root / "images", root / "model"

    def ensure(self) -> Path:
        if not self.folder.exists():
            self.folder.mkdir(parents=True)
            for i in range(6):
                Image.new("RGB", (8, 8), (i * 40, 100, 0)).save(self.folder / f"{i}.png")
        return self.folder

    def ensure_model(self) -> Path:
        if not self.model.exists():
            import torch

            import vitkit

            torch.manual_seed(0)
            vitkit.save_pretrained(vitkit.create_model("vit_digits"), self.model)
        return self.model


def _file(source: _Images, name: str, content: str | bytes | Callable[[Path], None], **spec: Any) -> Make:
    """A label file ``name`` beside the images (``content``: its text or bytes, or a function making it)."""
    def make() -> dict[str, Any]:
        folder = source.ensure()
        path = folder / name
        if callable(content):
            content(path)
        else:
            path.write_bytes(content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content)
        return {"path": str(path), **spec}
    return make


def _rows(*rows: str, header: str = "path,label") -> str:
    return header + "\n" + "".join(r + "\n" for r in rows)


GOOD = _rows("0.png,a", "1.png,b", "2.png,a", "3.png,b", "4.png,a", "5.png,b")
GOOD_MULTI = _rows("0.png,a;b", "1.png,b", "2.png,", "3.png,a|c", "4.png,c", "5.png,a", header="path,labels")


def _quadratic(path: Path) -> None:
    """~330 KB: each image of its own class (hard links to one image: 20,000 distinct paths)."""
    src = path.parent / "0.png"
    folder = path.parent / "many"
    folder.mkdir(exist_ok=True)
    for i in range(QUADRATIC_ROWS):
        if not os.path.lexists(folder / f"{i}.png"):
            os.link(src, folder / f"{i}.png")
    path.write_text("path,labels\n" + "".join(f"many/{i}.png,c{i}\n" for i in range(QUADRATIC_ROWS)))


def _odd_paths(path: Path) -> None:
    folder = path.parent
    if not os.path.lexists(folder / "pipe.png"):
        os.mkfifo(folder / "pipe.png")
    (folder / "dir.png").mkdir(exist_ok=True)
    path.write_text(_rows("0.png,a", "1.png,b", "2.png,a", "x" * 5000 + ".png,a", "pipe.png,b", "dir.png,a",
                          "http://127.0.0.1:9/x.png,b", "/nonexistent/y.png,a", "nul\\x00.png,a", "3.png,b"))


def _special(kind: str) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "device":
            os.symlink("/dev/zero", path)
        else:
            path.mkdir()
    return make


def _mutations(images: _Images, rng: random.Random) -> list[Case]:
    """Seeded truncations and byte flips of a good single- and multi-label CSV and JSONL file."""
    good = {"csv": GOOD.encode(), "multi.csv": GOOD_MULTI.encode(),
            "jsonl": "".join(json.dumps({"path": f"{i}.png", "labels": ["a", "b"][: 1 + i % 2]}) + "\n"
                             for i in range(6)).encode()}
    out = []
    for kind, data in good.items():
        for i in range(12):
            blob = bytearray(data)
            at = rng.randrange(len(blob))
            if i % 3 == 0:
                del blob[at:]
            else:
                blob[at] ^= rng.randrange(1, 256)
            name = f"mut-{kind.replace('.', '-')}-{i}.{kind.rsplit('.', 1)[-1]}"
            out.append(Case(f"labelfiles/{name}", CATEGORY, "labelfile", "either", _file(images, name, bytes(blob)),
                            bulk=True))
    return out


def _cli(images: _Images, name: str, argv: Callable[[Path], list[str]], **spec: Any) -> Make:
    def make() -> dict[str, Any]:
        return {"argv": argv(images.ensure()), **spec}
    return make


def _escaping_classes(images: _Images, root: Path) -> Make:
    """Class names that are paths out of --out; --export-samples must keep every sample inside it."""
    victim = root / "victim"
    escape = os.path.relpath(victim / "ESCAPED", root / "runs" / "escape" / "samples")

    def make() -> dict[str, Any]:
        folder = images.ensure()
        rows = [f"{i}.png,{escape if i % 2 else str(victim / 'abs')}" for i in range(6)]
        (folder / "escape.csv").write_text(_rows(*rows))
        out = root / "runs" / "escape"
        return {"argv": ["train", "--labels", str(folder / "escape.csv"), *TINY_TRAIN, "--export-samples", "1",
                         "--out", str(out)],
                "forbidden": [str(victim / "ESCAPED_0.png"), str(victim / "abs_0.png"), str(victim)]}
    return make


def cases(root: Path, rng: random.Random) -> list[Case]:
    images = _Images(root)
    refused: dict[str, tuple[str, str | bytes | Callable[[Path], None], dict[str, Any]]] = {
        "header-missing": ("a.csv", "0.png,a\n1.png,b\n", {}),
        "header-both-label-columns": ("b.csv", _rows("0.png,a,a", header="path,label,labels"), {}),
        "empty": ("c.csv", "", {}),
        "bad-utf8": ("d.csv", b"path,label\n0.png,\xff\xfe\n", {}),
        "field-beyond-csv-limit": ("e.csv", _rows("0.png,a", "1.png," + "x" * 200_000), {}),
        "quote-left-open": ("f.csv", 'path,label\n0.png,"a\n1.png,b\n' + "y" * 300_000, {}),
        "jsonl-deep": ("g.jsonl", '{"path": "0.png", "label": ' + "[" * 50_000 + "]" * 50_000 + "}\n", {}),
        "jsonl-nan": ("h.jsonl", '{"path": "0.png", "label": NaN}\n', {}),
        "jsonl-line-beyond-limit": ("i.jsonl", '{"path": "0.png", "label": "' + "z" * 200_000 + '"}\n', {}),
        "jsonl-not-an-object": ("j.jsonl", "[1, 2]\n", {}),
        "jsonl-label-and-labels": ("k.jsonl", '{"path": "0.png", "label": "a"}\n{"path": "1.png", "labels": ["b"]}\n',
                                   {}),
        "jsonl-list-under-label": ("l.jsonl", '{"path": "0.png", "label": ["a", "b"]}\n', {}),
        "jsonl-label-object": ("m.jsonl", '{"path": "0.png", "label": {"a": 1}}\n', {}),
        "jsonl-path-number": ("n.jsonl", '{"path": 5, "label": "a"}\n', {}),
        "two-labels-in-label": ("o.csv", _rows("0.png,a;b", "1.png,b"), {}),
        "conflicting-rows": ("p.csv", _rows("0.png,a", "1.png,b", "./0.png,b"), {}),
        "no-image-exists": ("q.csv", _rows("nope.png,a", "/nonexistent/x.png,b"), {}),
        "a-folder": ("r.csv", _special("folder"), {}),
        "too-many-classes": ("s.csv", _rows(*(f"{i}.png,c{i}" for i in range(6))), {"max_classes": 5}),
    }
    out = [Case(f"labelfiles/{name}", CATEGORY, "labelfile", "error", _file(images, file, content, **spec))
           for name, (file, content, spec) in refused.items()]
    out += [Case(f"labelfiles/{kind}", CATEGORY, "labelfile", "error", _file(images, f"{kind}.csv", _special(kind)),
                 isolate=True) for kind in ("fifo", "device")]
    loaded: dict[str, tuple[str, str | bytes | Callable[[Path], None], dict[str, Any]]] = {
        "good": ("good.csv", GOOD, {"images": 6, "classes": 2}),
        "good-multi": ("good-multi.csv", GOOD_MULTI, {"images": 6, "classes": 3}),
        "a-class-per-line-quadratic": ("quadratic.csv", _quadratic,
                                       {"images": QUADRATIC_ROWS, "classes": QUADRATIC_ROWS}),
        "odd-paths-skipped-and-counted": ("odd.csv", _odd_paths, {"images": 4, "skipped": 6}),
        "exact-duplicates-once": ("dup.csv", _rows("0.png,a", "1.png,b", "0.png,a", "./1.png,b"), {"images": 2}),
        "formula-and-surrogate-names": ("names.jsonl", '{"path": "0.png", "label": "=HYPERLINK(\\"http://x\\")"}\n'
                                        '{"path": "1.png", "label": "\\ud800"}\n', {"images": 2, "classes": 2}),
        "bom-and-blank-lines": ("bom.csv", "\ufeffpath,label\n\n0.png,a\n\n1.png,b\n", {"images": 2}),
    }
    out += [Case(f"labelfiles/{name}", CATEGORY, "labelfile", "ok", _file(images, file, content, **spec))
            for name, (file, content, spec) in loaded.items()]
    cli = {
        "train-deep-jsonl": lambda f: ["train", "--labels", str(_deep(f / "deep.jsonl", '{"path": "0.png", "label": ')),
                                       *TINY_TRAIN, "--out", str(root / "runs" / "deep")],
        "train-folder-as-labels": lambda f: ["train", "--labels", str(f), *TINY_TRAIN, "--out",
                                             str(root / "runs" / "folder")],
        "train-model-deep-json": lambda f: ["train", "--model", str(_deep(f / "deep-model.json")), "--max-steps", "1",
                                            "--out", str(root / "runs" / "deep-model")],
        "predict-labels-deep-json": lambda f: ["predict", str(f / "0.png"), "--model", str(images.ensure_model()),
                                               "--labels", str(_deep(f / "deep-labels.json"))],
    }
    out += [Case(f"labelfiles/{name}", CATEGORY, "cli", "error", _cli(images, name, argv))
            for name, argv in cli.items()]
    out.append(Case("labelfiles/train-class-names-leaving-out", CATEGORY, "cli", "ok", _escaping_classes(images, root)))
    return out + _mutations(images, rng)


def _deep(path: Path, prefix: str = "") -> Path:
    depth = 50_000 if prefix else 100_000  # a JSONL line stays within the line limit: its nesting is refused
    path.write_text(prefix + "[" * depth + "]" * depth + ("}\n" if prefix else ""))
    return path
