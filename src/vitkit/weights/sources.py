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

from ..errors import CheckpointError, CorruptCheckpointError, UnsafeCheckpointError
from . import validate

HUB_PREFIX = "hf-hub:"
EXPECTED = ("a .safetensors, .pth/.bin (tensors only) or .npz file, a folder with config.json and "
            "model.safetensors, or 'hf-hub:ORG/NAME'")
COMMIT = re.compile(r"[0-9a-f]{40}")
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
        raise CheckpointError(f"Weight source {text!r} does not exist. Expected {EXPECTED}.")
    return path


def _first_line(exc: BaseException) -> str:
    return next(iter(str(exc).splitlines()), "") or "no message"


def download_from_hub(repo: str) -> Path:
    """Download a Hub repository's config and weights (safetensors first) and return the local folder.

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
        folder = Path(snapshot_download(repo_id, revision=revision or None,
                                        allow_patterns=["*.json", "*.safetensors", "spiece.model"]))
        if not any(folder.glob("*.safetensors")):
            folder = Path(snapshot_download(repo_id, revision=revision or None,
                                            allow_patterns=["*.json", "*.bin", "*.pth", "*.npz"]))
    except Exception as exc:  # network, auth, missing repo: all end in the same advice
        raise HubUnavailableError(
            f"Could not get {repo_id!r} from the Hugging Face Hub ({type(exc).__name__}: {_first_line(exc)}). "
            f"Without network access, download it on a machine that has it: "
            f"`hf download {repo_id} config.json model.safetensors --local-dir {repo_id.split('/')[-1]}` "
            "(`huggingface-cli download` with older huggingface_hub), "
            f"copy that folder here and pass its path as the weight source instead of '{HUB_PREFIX}{repo}'.") from None
    check_snapshot(folder, storage)
    return folder


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
    try:
        real, home = path.resolve(), storage.resolve()
    except (OSError, RuntimeError):  # a link loop
        raise _damaged(storage, f"{what} {path.name} is a link that loops") from None
    if real != home and home not in real.parents:
        raise UnsafeCheckpointError(f"The Hugging Face cache entry {storage}: {what} {path.name} leads outside it "
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
