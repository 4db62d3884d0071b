"""Where weights come from: a local file or folder, or a Hugging Face Hub repository (through its cache).

A cache entry is a stranger's folder as much as a download is: before huggingface_hub reads it, its ref
(``refs/<revision>``), tree listing (``trees/<commit>.json``) and snapshot files are checked here: regular
files only (never a FIFO or a device), bounded in size, a ref holding a commit hash, and every snapshot file
inside the cache. A damaged entry is reported as damaged, not as missing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, CorruptCheckpointError, UnsafeCheckpointError
from . import validate

HUB_PREFIX = "hf-hub:"
EXPECTED = ("a .safetensors, .pth/.bin (tensors only) or .npz file, a folder with config.json and "
            "model.safetensors, or 'hf-hub:ORG/NAME'")
COMMIT = re.compile(r"[0-9a-f]{40}")
# what transformers takes for a repository id: ORG/NAME, letters, digits and -_. (no path-like ./, .., //)
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
WEIGHT_FILES = (["*.json", "*.safetensors", "spiece.model"], ["*.json", "*.bin", "*.pth", "*.npz"])
MAX_REF_BYTES = 1024  # a ref holds one 40-character commit hash


class HubUnavailableError(CheckpointError):
    """A Hub repository is neither in the cache nor downloadable here (offline, no network, no access)."""


def resolve_source(source: str | os.PathLike[str]) -> Path:
    """A local path for ``source``: an existing file or folder, or a Hub id downloaded to the cache."""
    text = os.fspath(source)
    if text.startswith(HUB_PREFIX):
        return download_from_hub(text[len(HUB_PREFIX):])
    path = Path(text).expanduser()
    if not path.exists():
        if looks_like_repo_id(text):  # 'google/vit-base-patch16-224', as transformers' from_pretrained takes it
            return cached_repo(text)
        raise CheckpointError(f"No such path: {text!r} does not exist{_missing_part(path)}. Expected {EXPECTED}.")
    return path


def _missing_part(path: Path) -> str:
    """Where a missing path stops existing: `` ('runs' has no 'nosuch')``, or '' when its first part is missing."""
    parent = path
    while not parent.parent.exists() and parent.parent != parent:
        parent = parent.parent
    if parent.parent == parent or str(parent.parent) in ("", "."):
        return ""
    return f" ({str(parent.parent)!r} has no {parent.name!r})"


def looks_like_repo_id(text: str) -> bool:
    """Whether ``text`` has the form of a Hub repository id (ORG/NAME) rather than of a longer path."""
    return bool(REPO_ID.fullmatch(text)) and ".." not in text and not text.endswith(".")


def not_cached_advice(repo_id: str) -> str:
    """What to do when the repository ``repo_id`` is not in the Hugging Face cache (one sentence)."""
    return (f"Download it once with `hf download {repo_id}` (then this name works offline), or pass "
            f"'{HUB_PREFIX}{repo_id}' to download it when online.")


def cached_repo(repo_id: str) -> Path:
    """The cached snapshot of the Hub repository ``repo_id`` (no network: a bare id is looked up in the cache,
    as transformers' ``from_pretrained`` does offline), or a one-line error saying it is not there."""
    folder = cached_snapshot(repo_id)
    if folder is None:
        raise CheckpointError(f"{repo_id!r} is not a local path, and the Hugging Face cache ({cache_root()}) holds no "
                              f"repository {repo_id!r}. {not_cached_advice(repo_id)}")
    return folder


def cached_snapshot(repo_id: str) -> Path | None:
    """The checked snapshot folder of a cached Hub repository (its ``main`` revision), or None when it is not
    cached; nothing is downloaded."""
    try:
        storage = check_cache_entry(repo_id, "main")
    except ImportError:  # huggingface_hub missing: nothing can be cached
        return None
    if not storage.is_dir():
        return None
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # LocalEntryNotFoundError: no ref or snapshot for main
        return None
    check_snapshot(folder, storage)
    return folder


def cache_root() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _first_line(exc: BaseException) -> str:
    return next(iter(str(exc).splitlines()), "") or "no message"


def download_from_hub(repo: str, *, config_only: bool = False) -> Path:
    """Download a Hub repository's config and weights (safetensors first; ``config_only``: its JSON files
    alone) and return the local folder; a cached repository is read from the cache.

    The cache entry is checked before huggingface_hub reads it (``check_cache_entry``) and the folder it
    returns after."""
    repo_id, _, revision = repo.partition("@")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(repo_id)
    except Exception as exc:  # a malformed id (HFValidationError)
        raise CheckpointError(f"{HUB_PREFIX}{repo} is not a Hub repository id ({_first_line(exc)}). Expected "
                              f"'{HUB_PREFIX}ORG/NAME' or '{HUB_PREFIX}ORG/NAME@REVISION'.") from None
    storage = check_cache_entry(repo_id, revision or "main")
    try:
        first, fallback = (["*.json"], None) if config_only else WEIGHT_FILES
        folder = Path(snapshot_download(repo_id, revision=revision or None, allow_patterns=first))
        if fallback and not any(folder.glob("*.safetensors")):
            folder = Path(snapshot_download(repo_id, revision=revision or None, allow_patterns=fallback))
    except Exception as exc:  # network, auth, missing repo: all end in the same advice
        raise HubUnavailableError(
            f"Could not get {repo_id!r} from the Hugging Face Hub ({type(exc).__name__}: {_first_line(exc)}). "
            f"Without network access, download it on a machine that has it: "
            f"`hf download {repo_id} config.json model.safetensors --local-dir {repo_id.split('/')[-1]}` "
            "(`huggingface-cli download` with older huggingface_hub), "
            f"copy that folder here and pass its path as the weight source instead of '{HUB_PREFIX}{repo}'.") from None
    check_snapshot(folder, storage)
    return folder


def hub_model(repo: str, *, weights: bool) -> tuple[Path, dict[str, Any]]:
    """A Hub model repository's local folder (its weights too when ``weights``, else its JSON files alone) and
    its config.json, read with the bounds of any checkpoint's JSON."""
    folder = download_from_hub(repo, config_only=not weights)
    path = folder / "config.json"
    if not os.path.lexists(path):
        raise CheckpointError(f"{HUB_PREFIX}{repo} has no config.json, so its architecture is unknown. Expected a "
                              "model repository as timm or transformers publish them (config.json beside the weights).")
    return folder, validate.read_json_file(path)


def cache_folder(repo_id: str) -> Path:
    """The cache folder huggingface_hub keeps a model repository in (``models--ORG--NAME``)."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    return Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")


def _damaged(storage: Path, what: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(
        f"The Hugging Face cache entry {storage} is damaged: {what}. Delete that folder (or run `hf cache delete`) "
        "and download the repository again.")


def _check_small_file(path: Path, storage: Path, limit: int, what: str) -> None:
    """``path`` is a regular file inside the cache entry, at most ``limit`` bytes (its bytes are never echoed)."""
    inside(path, storage, what)
    problem = validate.not_a_regular_file(path)
    if problem is not None:
        raise _damaged(storage, f"{what} {problem}")
    size = path.stat().st_size
    if size > limit:
        raise _damaged(storage, f"{what} is {size:,} bytes, more than the {limit:,} it may have")


def inside(path: Path, storage: Path, what: str) -> None:
    """Refuse a cache file whose real location (links followed) is outside the cache entry."""
    named = what if what.endswith(f"/{path.name}") else f"{what} {path.name}"  # "the ref refs/main", once
    try:
        real, home = path.resolve(), storage.resolve()
    except (OSError, RuntimeError):  # a link loop
        raise _damaged(storage, f"{named} is a link that loops") from None
    if real != home and home not in real.parents:
        raise UnsafeCheckpointError(f"The Hugging Face cache entry {storage}: {named} leads outside it "
                                    "(a link or a name pointing elsewhere); vitkit reads only files inside the cache "
                                    "entry. Delete that folder and download the repository again.")


def check_cache_entry(repo_id: str, revision: str) -> Path:
    """Check what huggingface_hub will read of a cached repository before it reads it; returns the entry's
    folder (which need not exist: then there is nothing cached to check)."""
    storage = cache_folder(repo_id)
    if not storage.is_dir():
        return storage
    commit = revision if COMMIT.fullmatch(revision) else None
    if commit is None:
        ref = validate.inside_folder(storage / "refs", revision, f"The revision of {HUB_PREFIX}{repo_id}")
        if os.path.lexists(ref):
            _check_small_file(ref, storage, MAX_REF_BYTES, f"the ref refs/{revision}")
            text = ref.read_bytes().strip()
            if not COMMIT.fullmatch(text.decode("ascii", "replace")):
                raise _damaged(storage, f"refs/{revision} does not hold a commit hash (40 hexadecimal digits)")
            commit = text.decode("ascii")
    if commit is None:
        return storage
    tree = storage / "trees" / f"{commit}.json"
    if os.path.lexists(tree):
        _check_small_file(tree, storage, validate.LIMITS.max_json_bytes, "the tree listing")
        validate.load_json_text(tree.read_bytes(), f"the tree listing {tree}")
    snapshot = storage / "snapshots" / commit
    if os.path.lexists(snapshot):
        check_snapshot(snapshot, storage)
    return storage


def check_snapshot(folder: Path, storage: Path) -> None:
    """A snapshot folder inside the cache entry whose files are regular files inside it (links into blobs/)."""
    if not storage.is_dir():  # not a cache folder (a local_dir download): nothing to hold it to
        return
    inside(folder, storage, "the snapshot folder")
    if not folder.is_dir():
        raise _damaged(storage, f"the snapshot {folder.name} is not a folder")
    for path in sorted(folder.iterdir()):
        inside(path, storage, "the snapshot file")
        problem = None if path.is_dir() else validate.not_a_regular_file(path)
        if problem is not None:
            raise _damaged(storage, f"the snapshot file {path.name} {problem}")
