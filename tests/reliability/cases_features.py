"""Hostile features state: what a stranger (or a crash) left beside ``vitkit features --out OUT``.

A parts folder that is not vitkit's (a user's folder of that name, a link, a FIFO or a device as its manifest),
sidecars no features run wrote, unfinished parts of other weights or of a missing rank, and vitkit's own
unfinished parts damaged (a manifest that is garbage, deep or mistyped; chunks truncated, of other rows,
of other shapes, a zip bomb). A refused case must leave every file it did not write as it was; a resumable
one must end equal to the uninterrupted run.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from corpus import Case, kept
from PIL import Image

CATEGORY = "features state"
Make = Callable[[], dict[str, Any]]


class _Base:
    """A tiny model, four images, the uninterrupted run's output, and a finished but unmerged parts folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.images = root / "images"
        self.model = root / "model"
        self.reference = root / "reference" / "f.npy"
        self.unmerged = root / "unmerged" / "f.npy"

    def build(self) -> None:
        if self.reference.exists():
            return
        import torch

        import vitkit
        import vitkit.features as features

        self.images.mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (20, 20), (i * 50, 10, 200 - i * 40)).save(self.images / f"{i}.png")
        torch.manual_seed(0)
        vitkit.save_pretrained(vitkit.create_model("vit_digits"), self.model)
        features.extract_features(self.images, self.reference, model=str(self.model), batch_size=2, num_workers=0)
        merge = features.merge_if_complete
        features.merge_if_complete = lambda out: None  # every rank done, nothing merged: the state to damage
        try:
            features.extract_features(self.images, self.unmerged, model=str(self.model), batch_size=2,
                                      num_workers=0)
        finally:
            features.merge_if_complete = merge

    def case(self, name: str, damage: Callable[[Path], list[Path]], *, unmerged: bool = False,
             **spec: Any) -> Make:
        """A private output folder (with the unmerged parts when asked), damaged; ``damage`` returns the files
        the run must keep as they are."""
        def make() -> dict[str, Any]:
            self.build()
            folder = self.root / "cases" / name
            if unmerged:
                shutil.copytree(self.unmerged.parent, folder, symlinks=True)
            else:
                folder.mkdir(parents=True)
            out = folder / "f.npy"
            keep = damage(out)
            return {"images": str(self.images), "out": str(out), "model": str(self.model),
                    "ref": str(self.reference), "kept": kept(*keep), **spec}
        return make


def act_features(case: dict[str, Any]) -> str:
    """``vitkit features`` again on OUT (or ``--merge``): an error, or an output equal to the reference."""
    from vitkit.features import extract_features, load_features
    from vitkit.featurestore import merge_features

    out = Path(case["out"])
    if case.get("merge"):
        merge_features(out)
    else:
        extract_features(case["images"], out, model=case["model"], batch_size=2, num_workers=0,
                         **case.get("kwargs", {}))
    feats, files = load_features(out)
    ref, ref_files = load_features(case["ref"])
    same_files = [Path(f).name for f in files] == [Path(f).name for f in ref_files]
    return "loaded" if same_files and np.array_equal(feats, ref) else "loaded-different"


ACTIONS = {"features": act_features}


# ---------------------------------------------------------------------- damage
def _parts(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _replace(path: Path, how: str, target: str = "") -> list[Path]:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
    if how == "fifo":
        os.mkfifo(path)
    elif how == "link":
        os.symlink(target, path)
    return []


def _users_folder(out: Path) -> list[Path]:
    return [_write(_parts(out) / "thesis.tex", "years of work")]


def _users_file_in_rank(out: Path) -> list[Path]:
    return [_write(_parts(out) / "rank0-of-1" / "notes.txt", "mine")]


def _parts_link(out: Path) -> list[Path]:
    theirs = _write(out.parent / "elsewhere" / "thesis.tex", "years of work")
    os.symlink(theirs.parent, _parts(out))
    return [theirs]


def _parts_file(out: Path) -> list[Path]:
    return [_write(_parts(out), "a file of that name")]


def _sidecar(name: str, text: str) -> Callable[[Path], list[Path]]:
    return lambda out: [_write(out.with_name(out.name + name), text)]


def _manifest(text: str | bytes) -> Callable[[Path], list[Path]]:
    return lambda out: (_write(_parts(out) / "manifest.json", text), [])[1]


def _manifest_field(edit: Callable[[dict[str, Any]], None]) -> Callable[[Path], list[Path]]:
    def damage(out: Path) -> list[Path]:
        path = _parts(out) / "manifest.json"
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
        return []
    return damage


def _chunk(edit: Callable[[Path], None], which: str = "chunk_000000.npz") -> Callable[[Path], list[Path]]:
    return lambda out: (edit(_parts(out) / "rank0-of-1" / which), [])[1]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _npz(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _rows_of(path: Path, index: list[int], width: int | None = None) -> None:
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["index"] = np.asarray(index, dtype=np.int64)
    if width is not None:
        arrays["features"] = np.zeros((len(index), width), np.float32)
    _npz(path, **arrays)


def _bomb(path: Path) -> None:
    """A chunk whose features member expands to 2 GB from a few MB."""
    header = b"\x93NUMPY\x01\x00" + b"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 268435456), }"
    header += b" " * (127 - len(header)) + b"\n"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("features.npy", "w", force_zip64=True) as member:
            member.write(header)
            block = bytes(1 << 24)
            for _ in range(128):
                member.write(block)
        for name in ("index", "failed_index"):
            buf = io.BytesIO()
            np.save(buf, np.zeros(0, np.int64))
            zf.writestr(f"{name}.npy", buf.getvalue())
        buf = io.BytesIO()
        np.save(buf, np.zeros(0, np.str_))
        zf.writestr("failed_error.npy", buf.getvalue())


# ---------------------------------------------------------------------- the cases
def cases(root: Path, rng: random.Random) -> list[Case]:
    base = _Base(root)
    refused: dict[str, tuple[Callable[[Path], list[Path]], dict[str, Any]]] = {
        "parts-users-folder": (_users_folder, {}),
        "parts-users-folder-overwrite": (_users_folder, {"kwargs": {"overwrite": True}}),
        "parts-users-file-in-a-rank-folder": (_users_file_in_rank, {}),
        "parts-is-a-link": (_parts_link, {}),
        "parts-is-a-file": (_parts_file, {}),
        "parts-users-folder-merge": (_users_folder, {"merge": True}),
        "sidecar-json-users": (_sidecar(".json", '{"my": "notes"}'), {}),
        "sidecar-list-users": (_sidecar(".files.txt", "my list\n"), {}),
        "sidecar-json-users-merge": (_sidecar(".json", "notes"), {"merge": True}),
        "merge-nothing": (lambda out: [], {"merge": True}),
    }
    out: list[Case] = []
    for name, (damage, spec) in refused.items():
        out.append(Case(f"features/{name}", CATEGORY, "features", "error", base.case(name, damage, **spec)))
    isolated = {
        "manifest-fifo": lambda o: _replace(_parts(o) / "manifest.json", "fifo"),
        "manifest-dev-zero": lambda o: _replace(_parts(o) / "manifest.json", "link", "/dev/zero"),
        "chunk-fifo": lambda o: _replace(_parts(o) / "rank0-of-1" / "chunk_000000.npz", "fifo"),
    }
    for name, damage in isolated.items():
        for merge in (False, True):
            label = f"{name}{'-merge' if merge else ''}"
            out.append(Case(f"features/{label}", CATEGORY, "features", "error",
                            base.case(label, damage, unmerged=True, merge=merge), isolate=True))
    # vitkit's own parts, damaged: a rerun recomputes what it cannot trust; --merge alone refuses in one line
    resumable: dict[str, Callable[[Path], list[Path]]] = {
        "pristine": lambda o: [],
        "manifest-garbage": _manifest(b"\xff\x00garbage"),
        "manifest-deep": _manifest("[" * 100_000 + "]" * 100_000),
        "manifest-empty": _manifest(""),
        "manifest-world-size-string": _manifest_field(lambda d: d["settings"].update(world_size="x")),
        "manifest-world-size-huge": _manifest_field(lambda d: d["settings"].update(world_size=10**9)),
        "manifest-other-settings": _manifest_field(lambda d: d["settings"].update(world_size=3)),
        "manifest-files-not-a-list": _manifest_field(lambda d: d["settings"].update(files=5)),
        "manifest-chunk-size-zero": _manifest_field(lambda d: d.update(chunk_size=0)),
        "manifest-chunk-size-float": _manifest_field(lambda d: d.update(chunk_size=1e308)),
        "chunk-truncated": _chunk(_truncate),
        "chunk-empty": _chunk(lambda p: p.write_bytes(b"")),
        "chunk-other-rows": _chunk(lambda p: _rows_of(p, [7, 9])),
        "chunk-negative-rows": _chunk(lambda p: _rows_of(p, [-1, -2])),
        "chunk-other-width": _chunk(lambda p: _rows_of(p, [0, 1], width=3)),
        "chunk-zip-bomb": _chunk(_bomb),
        "chunk-missing": _chunk(lambda p: p.unlink()),
        "done-missing": _chunk(lambda p: p.unlink(), which="done.json"),
        "done-garbage": _chunk(lambda p: p.write_text("[[["), which="done.json"),
    }
    # another run's intact state is refused, not mixed in; a chunk that disagrees with the others is removed
    # and named (the rerun after that one recomputes it)
    refused_resumes = ("manifest-other-settings", "chunk-other-width")
    for name, damage in resumable.items():
        expect = "error" if name in refused_resumes else "ok"
        out.append(Case(f"features/resume-{name}", CATEGORY, "features", expect,
                        base.case(f"r-{name}", damage, unmerged=True), bulk=name != "pristine"))
        if name not in ("pristine", "done-garbage"):  # those merge as they are
            out.append(Case(f"features/merge-{name}", CATEGORY, "features", "error",
                            base.case(f"m-{name}", damage, unmerged=True, merge=True), bulk=True))
    return out
