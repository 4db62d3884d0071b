"""The hub-cache category of the reliability corpus: Hugging Face cache entries laid out by a stranger.

Each case is one repository in one offline cache (``HF_HUB_CACHE``, ``HF_HUB_OFFLINE=1``), loaded as
``hf-hub:ORG/NAME``: refs naming paths, FIFOs, devices, huge or empty refs, tree listings that block or nest,
snapshot files that lead out of the cache. Every case must end in a one-line VitkitError within the limits
(the pristine one must load the reference tensors).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from corpus import Case, tiny_model
from harness import RELIABILITY_TABLES, run, table
from safetensors.torch import save_file

import vitkit

COMMIT = "0123456789abcdef0123456789abcdef01234567"
CATEGORY = "hubcache"


class Cache:
    """One offline cache; ``entry`` lays out a repository in it as huggingface_hub does."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cache = root / "cache"
        model = tiny_model()
        self.model_dir = root / "model"
        vitkit.save_pretrained(model, self.model_dir, format="timm")
        self.ref = str(root / "ref.safetensors")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, self.ref)

    def entry(self, name: str) -> Path:
        """models--org--NAME with blobs/, snapshots/COMMIT/<file> -> ../../blobs/<sha256>, refs/main."""
        storage = self.cache / f"models--org--{name}"
        snap = storage / "snapshots" / COMMIT
        snap.mkdir(parents=True)
        (storage / "blobs").mkdir()
        (storage / "refs").mkdir()
        (storage / "refs" / "main").write_text(COMMIT)
        for f in sorted(self.model_dir.iterdir()):
            data = f.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            (storage / "blobs" / digest).write_bytes(data)
            os.symlink(f"../../blobs/{digest}", snap / f.name)
        return storage


def _replace(path: Path, how: str, target: str = "") -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    if how == "fifo":
        os.mkfifo(path)
    elif how == "link":
        os.symlink(target, path)
    elif how == "dir":
        path.mkdir()
    else:
        path.write_bytes(target.encode() if isinstance(target, str) else target)


def _edits(cache: Cache) -> dict[str, tuple[Callable[[Path], None], bool]]:
    """Case name -> (edit of the entry's folder, runs isolated)."""
    outside = cache.root / "outside"

    def escape(storage: Path) -> None:  # a complete model where refs/main leads: outside the cache
        shutil.copytree(storage / "snapshots" / COMMIT, outside / "snap", symlinks=False)
        _replace(storage / "refs" / "main", "text", "../../../outside/snap")

    def snapshot_file_outside(storage: Path) -> None:
        shutil.copytree(cache.model_dir, outside / "copy", dirs_exist_ok=True)
        _replace(storage / "snapshots" / COMMIT / "model.safetensors", "link",
                 str(outside / "copy" / "model.safetensors"))

    snap = f"snapshots/{COMMIT}"
    return {
        "pristine": (lambda s: None, False),
        "ref-escapes-cache": (escape, False),
        "ref-dotdot": (lambda s: _replace(s / "refs" / "main", "text", "../../.."), False),
        "ref-fifo": (lambda s: _replace(s / "refs" / "main", "fifo"), True),
        "ref-dev-zero": (lambda s: _replace(s / "refs" / "main", "link", "/dev/zero"), True),
        "ref-empty": (lambda s: _replace(s / "refs" / "main", "text", ""), False),
        "ref-folder": (lambda s: _replace(s / "refs" / "main", "dir"), False),
        "ref-huge": (lambda s: _replace(s / "refs" / "main", "text", "a" * 5_000_000), False),
        "ref-not-hex": (lambda s: _replace(s / "refs" / "main", "text", "z" * 40), False),
        "ref-binary": (lambda s: _replace(s / "refs" / "main", "text", b"\xff\xfe\x00" * 20), False),
        "ref-link-outside": (lambda s: _replace(s / "refs" / "main", "link", "/etc/hostname"), False),
        "tree-fifo": (lambda s: _replace(s / "trees" / f"{COMMIT}.json", "fifo"), True),
        "tree-dev-zero": (lambda s: _replace(s / "trees" / f"{COMMIT}.json", "link", "/dev/zero"), True),
        "tree-deep": (lambda s: _replace(s / "trees" / f"{COMMIT}.json", "text", "[" * 200_000), False),
        "snapshot-file-outside": (snapshot_file_outside, False),
        "snapshot-file-fifo": (lambda s: _replace(s / snap / "config.json", "fifo"), True),
        "snapshot-file-loop": (lambda s: _replace(s / snap / "config.json", "link", "config.json"), False),
        "snapshot-is-link": (lambda s: (shutil.copytree(s / snap, outside / "linked", symlinks=False),
                                        _replace(s / snap, "link", str(outside / "linked"))), False),
    }


def _make(cache: Cache, name: str, edit: Callable[[Path], None]) -> Callable[[], dict[str, Any]]:
    def make() -> dict[str, Any]:
        edit(cache.entry(name))
        return {"path": f"hf-hub:org/{name}", "ref": cache.ref}
    return make


def hubcache_cases(cache: Cache) -> list[Case]:
    return [Case(f"hubcache/{name}", CATEGORY, "load", "ok" if name == "pristine" else "error",
                 _make(cache, name, edit), isolate=isolate)
            for name, (edit, isolate) in _edits(cache).items()]


@pytest.mark.timeout(600)
def test_hub_cache_corpus(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = Cache(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache.cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    verdicts = run(hubcache_cases(cache), tmp_path / "runs", jobs=2)
    request.config.stash.setdefault(RELIABILITY_TABLES, []).append((CATEGORY, table(verdicts)))
    failures = [f"{v.case.id} expected {v.case.expect}, got {v.outcome}: {v.detail}" for v in verdicts if not v.passed]
    assert not failures, "\n".join(failures)
    # a damaged entry is said to be damaged, naming it (not "not in the cache" or "could not get it")
    for v in verdicts:
        entry = f"models--org--{v.case.id.split('/')[1]}"
        if v.case.expect == "error":
            assert entry in v.detail and "Could not get" not in v.detail and "refs/main main" not in v.detail, \
                f"{v.case.id}: {v.detail}"
