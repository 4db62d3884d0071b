"""The on-disk store of a features run: parts, chunks, locks, the merge and the sidecars.

Layout while running, for ``--out feats.npy``::

    feats.npy.parts/manifest.json                 settings and the global file list (row order)
    feats.npy.parts/rank0-of-1.lock               held (flock) by the process computing rank 0 of 1
    feats.npy.parts/merge.lock                    held by the process merging the parts
    feats.npy.parts/rank0-of-1/chunk_000000.npz   one batch: features, row indices, failed files
    feats.npy.parts/rank0-of-1/done.json          written when the rank has every chunk

Each chunk is written to a temporary name and renamed, so a chunk on disk is complete; a rerun with
the same settings checks the chunks that exist, keeps the sound ones and recomputes a damaged one (as
it does every chunk when the manifest itself is damaged). Rank ``r`` of ``w`` takes files
``r, r + w, ...``. When every rank is done the parts are merged into ``feats.npy`` (or
``.safetensors``, key ``features``) with ``feats.npy.files.txt`` (one file per row) and
``feats.npy.json`` (settings, shape, files and the skipped files with their errors) beside it, and the
parts folder is removed.

What is already there is the user's until shown otherwise: a parts folder holding anything vitkit does not
write there (or that is a link) is refused, never removed, and only vitkit's own entries are ever deleted
from it; sidecars that an earlier `vitkit features` run did not write (``feats.npy.json`` that is no
features metadata, or a file list that disagrees with it) are replaced only with ``overwrite``.

Locks are ``flock`` locks, which the kernel drops when their process dies: a run killed at any point
(even during the merge) never leaves a lock that blocks the next one. The lock file names its owner
(pid, host), so a refusal can say who holds it, and a lock file left by a killed process is reported.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ConfigError, DataError, keyword
from .fileio import TEMP_SUFFIX, atomic_write, parse_json, read_regular_bytes
from .filelock import FileLock

logger = logging.getLogger(__name__)
OTHER_OUT, OVERWRITE = keyword("out"), keyword("overwrite", True)  # what a refusal of an output suggests

OUTPUT_SUFFIXES = (".npy", ".safetensors")
_TEMP = rf"\..+{re.escape(TEMP_SUFFIX)}"  # atomic_write's temporary files
OWN_PARTS_ENTRIES = re.compile(rf"manifest\.json|merge\.lock|rank\d+-of-\d+(\.lock)?|{_TEMP}")
OWN_RANK_ENTRIES = re.compile(rf"chunk_\d+\.npz|done\.json|{_TEMP}")
RANK_FOLDER = re.compile(r"rank\d+-of-\d+")
MAX_SIDECAR_BYTES = 1 << 30  # an earlier run's metadata (its file list: ~10 million files)
MAX_WORLD_SIZE = 1 << 16  # processes splitting one run (a manifest claiming more is damaged)


@dataclass
class FeaturesResult:
    """What a run produced. ``path`` is None while other ranks are still running."""

    path: Path | None
    files: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    shape: tuple[int, ...] | None = None
    computed: int = 0
    reused: int = 0
    features: np.ndarray | None = None  # the array itself, for a run without an output file


# ---------------------------------------------------------------------------------------------- files
def _write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1)))


def parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def rank_dir(parts: Path, rank: int, world_size: int) -> Path:
    return parts / f"rank{rank}-of-{world_size}"


def mark_done(folder: Path, chunks: int, images: int) -> None:
    """Record that a rank has every chunk (the merge waits for this file from every rank)."""
    _write_json(folder / "done.json", {"chunks": chunks, "images": images})


def sidecars(out: Path) -> tuple[Path, Path]:
    """The metadata and file-list files of an output, named after its whole name (``feats.npy.json``,
    ``feats.npy.files.txt``), so ``f.npy`` and ``f.safetensors`` in one folder keep their own."""
    return out.with_name(out.name + ".json"), out.with_name(out.name + ".files.txt")


def _legacy_file_list(out: Path) -> Path:
    """Where versions before 0.2 wrote the file list (``feats.files.txt``), still read by ``load_features``."""
    stem = out.with_suffix("")
    return stem.with_name(stem.name + ".files.txt")


# ---------------------------------------------------------------------------------------------- what is there
def _foreign_entry(parts: Path) -> str | None:
    """The first thing in ``parts`` that vitkit does not write there (the folder itself when it is a link or no
    folder), or None: it is missing, empty or vitkit's own."""
    if not os.path.lexists(parts):
        return None
    if parts.is_symlink() or not parts.is_dir():
        return "(the path itself: it is a link or no folder)"
    for entry in sorted(os.scandir(parts), key=lambda e: e.name):
        rank_folder = RANK_FOLDER.fullmatch(entry.name) is not None
        kind_ok = entry.is_dir(follow_symlinks=False) if rank_folder else entry.is_file(follow_symlinks=False)
        if not OWN_PARTS_ENTRIES.fullmatch(entry.name) or not kind_ok:  # a FIFO, a device, a link: not vitkit's
            return entry.name
        for inner in sorted(os.scandir(entry.path), key=lambda e: e.name) if rank_folder else ():
            if not OWN_RANK_ENTRIES.fullmatch(inner.name) or not inner.is_file(follow_symlinks=False):
                return f"{entry.name}/{inner.name}"
    return None


def remove_parts(parts: Path) -> None:
    """Delete vitkit's own entries of a parts folder (rank folders, chunks, manifest, locks, temporaries), then
    the folder when that emptied it: anything else in it stays."""
    if parts.is_symlink() or not parts.is_dir():
        return
    for entry in list(os.scandir(parts)):
        if not OWN_PARTS_ENTRIES.fullmatch(entry.name) or entry.is_symlink():
            continue
        if entry.is_dir():
            for inner in list(os.scandir(entry.path)):
                if OWN_RANK_ENTRIES.fullmatch(inner.name) and inner.is_file(follow_symlinks=False):
                    Path(inner.path).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                os.rmdir(entry.path)
        else:
            Path(entry.path).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        parts.rmdir()


def _own_sidecars(out: Path) -> bool:
    """Whether ``out``'s metadata file and file list (those present) were written by a features run: the
    metadata is features metadata and the list holds its files."""
    meta_path, list_path = sidecars(out)
    try:
        meta = parse_json(read_regular_bytes(meta_path, what="file", max_bytes=MAX_SIDECAR_BYTES, error=DataError),
                          str(meta_path), error=DataError, fix="")
    except DataError:
        return False
    if not isinstance(meta, dict) or not {"model", "pool", "shape", "files"} <= meta.keys():
        return False
    if not os.path.lexists(list_path):
        return True
    try:
        listed = read_regular_bytes(list_path, what="file", max_bytes=MAX_SIDECAR_BYTES, error=DataError)
        return listed.decode("utf-8").splitlines() == meta["files"]
    except (DataError, UnicodeDecodeError):
        return False


def check_outputs(out: Path, *, overwrite: bool = False) -> None:
    """Refuse, before any work, to write where it would lose something: a parts folder that is not vitkit's
    (never removed, even with ``overwrite``), or sidecars no features run wrote (unless ``overwrite``)."""
    parts = parts_dir(out)
    foreign = _foreign_entry(parts)
    if foreign is not None:
        raise DataError(f"{str(parts)!r} is where `vitkit features` keeps the parts of {out.name!r}, but it holds "
                        f"something vitkit did not write ({foreign[:200]!r}) and would be removed after the merge. "
                        f"Move it away, or choose another {OTHER_OUT}.", hints=(OTHER_OUT,))
    meta_path, list_path = sidecars(out)
    present = [p for p in (meta_path, list_path) if os.path.lexists(p)]
    if present and not overwrite and not _own_sidecars(out):
        raise DataError(f"{str(present[0])!r} exists and was not written by `vitkit features` for {out.name!r}; "
                        f"it would be replaced. Move it away, choose another {OTHER_OUT}, or pass {OVERWRITE}.",
                        hints=(OTHER_OUT, OVERWRITE))


# ---------------------------------------------------------------------------------------------- locks
def rank_lock(parts: Path, out: Path, rank: int, world_size: int, *, overwrite: bool = False) -> FileLock:
    """This rank's exclusive lock (the parts folder made if needed), or a DataError naming the run that holds
    it, or saying that another run has finished ``out`` while this one was starting."""
    lock: FileLock | str | None = None
    for _ in range(3):
        parts.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):  # the folder was just removed by a run finishing its merge
            lock = FileLock.try_acquire(parts / f"rank{rank}-of-{world_size}.lock")
            break
    if lock is None or isinstance(lock, str):
        raise DataError(f"Another `vitkit features` run ({lock or 'finishing now'}) is writing rank {rank} of "
                        f"{world_size} to {str(out)!r}. Wait for it to finish, or choose another {OTHER_OUT}.",
                        hints=(OTHER_OUT,))
    if out.exists() and not overwrite and not (parts / "manifest.json").exists():
        lock.release()
        remove_if_empty(parts)
        raise DataError(f"{str(out)!r} was written by another run while this one started. Use it, or pass "
                        f"{OVERWRITE} to compute it again.", hints=(OVERWRITE,))
    return lock


def weights_fingerprint(state: dict[str, Any]) -> str:
    """A digest of a state dict's names, shapes, dtypes and bytes: chunks are resumed only onto the same
    weights (two random initialisations, or a retrained run folder, give another digest)."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # (N,) -> bytes
    return digest.hexdigest()


def resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Rank and world size from the arguments, else torchrun's RANK / WORLD_SIZE, else (0, 1)."""
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank={rank}, world_size={world_size} is not a valid split: expected "
                          f"0 <= rank < world_size.")
    return rank, world_size


def _read_manifest(parts: Path) -> dict[str, Any] | None:
    """The manifest, or None when it is missing or damaged (then nothing in the parts can be trusted)."""
    path = parts / "manifest.json"
    if not os.path.lexists(path):
        return None
    try:
        data = parse_json(read_regular_bytes(path, what="manifest", max_bytes=MAX_SIDECAR_BYTES, error=DataError),
                          str(path), error=DataError, fix="")
        if _sound_manifest(data):
            return data
    except DataError:
        pass
    logger.warning("%s is damaged; the parts beside it cannot be trusted and are recomputed.", path)
    for rank_dir in parts.glob("rank*-of-*"):
        if rank_dir.is_dir():
            shutil.rmtree(rank_dir, ignore_errors=True)
    return None


def _sound_manifest(data: Any) -> bool:
    """Whether a manifest holds what the merge reads: a chunk size, a world size and the file list."""
    settings = data.get("settings") if isinstance(data, dict) else None
    if not isinstance(settings, dict):
        return False
    chunk_size, world_size, files = data.get("chunk_size"), settings.get("world_size"), settings.get("files")
    return type(chunk_size) is int and chunk_size > 0 and type(world_size) is int and \
        0 < world_size <= MAX_WORLD_SIZE and isinstance(files, list) and all(isinstance(f, str) for f in files)


def prepare_manifest(parts: Path, settings: dict[str, Any], chunk_size: int) -> int:
    """Write the manifest, or check that an earlier run's has the same settings. Returns the chunk size
    (an earlier run's, so that its chunks stay valid whatever batch size a rerun asks for)."""
    path = parts / "manifest.json"
    old = _read_manifest(parts)
    if old is not None:
        if old["settings"] != settings:
            changed = sorted(k for k in settings if old["settings"].get(k) != settings[k])
            if changed == ["weights_digest"]:
                raise DataError(f"{str(parts)!r} holds an unfinished run computed with other weights (random weights "
                                "are drawn anew by each run; a run folder may have been retrained). Rerun with the "
                                "same weights file to resume, or delete that folder to start over.")
            raise DataError(f"{str(parts)!r} holds an unfinished run with other settings ({', '.join(changed)}). "
                            f"Rerun with the same arguments to resume it, or delete that folder to start over.")
        return int(old["chunk_size"])
    _write_json(path, {"settings": settings, "chunk_size": chunk_size})
    return chunk_size


def save_chunk(path: Path, rows: list[int], errors: Mapping[int, Exception | str], feats: np.ndarray | None) -> None:
    """One batch's features (``rows``: the readable images, in order) and the errors of the others (by row),
    written atomically."""
    for err in errors.values():
        logger.info("skipped unreadable image: %s", err)
    failed = sorted(errors.items())
    arrays = {"features": feats if feats is not None else np.zeros((0,), np.float32),
              "index": np.asarray(rows, dtype=np.int64),
              "failed_index": np.asarray([r for r, _ in failed], dtype=np.int64),
              "failed_error": np.asarray([str(e) for _, e in failed], dtype=np.str_)}

    atomic_write(path, lambda tmp: _save_npz(tmp, arrays))


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _read_chunk(path: Path, rows: list[int] | None = None) -> dict[str, np.ndarray]:
    """A chunk's arrays, checked (the rows it covers, when known); a DataError names what is wrong."""
    try:
        with np.load(path, allow_pickle=False) as data:
            chunk = {k: data[k] for k in ("features", "index", "failed_index", "failed_error")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"feature chunk {str(path)!r} is damaged ({type(exc).__name__}: {exc})") from None
    integers = all(chunk[k].dtype.kind in "iu" and chunk[k].ndim == 1 for k in ("index", "failed_index"))
    if not integers or chunk["features"].dtype.kind not in "fiub" or chunk["features"].ndim < 1:
        raise DataError(f"feature chunk {str(path)!r} is damaged (its arrays have the wrong types)")
    covered = sorted(chunk["index"].tolist() + chunk["failed_index"].tolist())
    rows_ok = chunk["features"].shape[0] == len(chunk["index"]) or not len(chunk["index"])
    if not rows_ok or len(chunk["failed_error"]) != len(chunk["failed_index"]) or (
            rows is not None and covered != sorted(rows)):
        raise DataError(f"feature chunk {str(path)!r} is damaged (its rows do not match the run's)")
    return chunk


def sound_chunk(path: Path, rows: list[int]) -> bool:
    """Whether a chunk on disk is complete and covers ``rows``; a damaged one is removed (to be recomputed)."""
    if not path.exists():
        return False
    try:
        _read_chunk(path, rows)
        return True
    except DataError as exc:
        logger.warning("%s; recomputing it.", exc)
        path.unlink(missing_ok=True)
        return False


def remove_if_empty(parts: Path) -> None:
    """No debris: a parts folder with no computed chunk and no running process in it is removed."""
    if parts.is_dir() and not any(parts.glob("rank*-of-*/chunk_*.npz")) and not any(parts.glob("*.lock")):
        remove_parts(parts)


# ---------------------------------------------------------------------------------------------- merging
def _missing_ranks(parts: Path, world_size: int) -> list[int]:
    """The ranks that have not written their done.json yet."""
    return [r for r in range(world_size) if not (rank_dir(parts, r, world_size) / "done.json").exists()]


def _merge_lock(parts: Path) -> FileLock | str:
    try:
        return FileLock.try_acquire(parts / "merge.lock")
    except FileNotFoundError:  # the parts folder is gone: another process has merged it
        return "a process that has finished merging"


def merge_if_complete(out: Path) -> FeaturesResult | None:
    """Merge when every rank is done and no other process is merging; None otherwise."""
    parts = parts_dir(out)
    manifest = _read_manifest(parts)
    if manifest is None or _missing_ranks(parts, manifest["settings"]["world_size"]):
        return None
    lock = _merge_lock(parts)
    if isinstance(lock, str):  # only one process merges; the others leave it to that one
        logger.info("the parts of %s are being merged by %s", out, lock)
        return None
    try:
        if not (parts / "manifest.json").exists():  # merged by another process while we waited
            return None
        return _merge(out, parts, manifest["settings"])
    finally:
        lock.release()


def merge_features(out: str | os.PathLike, *, overwrite: bool = False) -> FeaturesResult:
    """Merge the parts of a split run into ``out`` (normally automatic when the last rank finishes).
    ``overwrite``: replace sidecars beside ``out`` that no features run wrote."""
    out = Path(out)
    parts = parts_dir(out)
    check_outputs(out, overwrite=overwrite)
    manifest = _read_manifest(parts)
    if manifest is None:
        raise DataError(f"No parts to merge: {str(parts)!r} holds no (readable) manifest. Run `vitkit features` "
                        f"with the same {OTHER_OUT} on every rank first.", hints=(OTHER_OUT,))
    world_size = manifest["settings"]["world_size"]
    missing = _missing_ranks(parts, world_size)
    if missing:
        raise DataError(f"Cannot merge {str(out)!r} yet: rank(s) {', '.join(map(str, missing))} of "
                        f"{world_size} have not finished. Rerun them (they resume), then merge.")
    lock = _merge_lock(parts)
    if isinstance(lock, str):
        raise DataError(f"{str(out)!r} is being merged right now by {lock}. Wait for it to finish.")
    try:
        return _merge(out, parts, manifest["settings"])
    finally:
        lock.release()


def _collect(parts: Path, settings: dict[str, Any]) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """Every rank's rows: features by row and errors by row. A damaged chunk is removed, with its rank's
    done.json, and reported, so that rerunning that rank recomputes exactly that part."""
    world_size, n = settings["world_size"], len(settings["files"])
    feats: dict[int, np.ndarray] = {}
    skipped: dict[int, str] = {}
    row_shape: tuple[int, ...] | None = None
    for r in range(world_size):
        folder = rank_dir(parts, r, world_size)
        for path in sorted(folder.glob("chunk_*.npz")):
            try:
                chunk = _read_chunk(path)
                rows = chunk["index"].tolist() + chunk["failed_index"].tolist()
                if any(not 0 <= i < n or i % world_size != r for i in rows):
                    raise DataError(f"feature chunk {str(path)!r} is damaged (it holds rows of another rank)")
                if len(chunk["index"]) and row_shape not in (None, chunk["features"].shape[1:]):
                    raise DataError(f"feature chunk {str(path)!r} is damaged (its features are "
                                    f"{chunk['features'].shape[1:]}, the others' {row_shape})")
            except DataError as exc:
                path.unlink(missing_ok=True)
                (folder / "done.json").unlink(missing_ok=True)
                raise DataError(f"{exc}; it was removed. Rerun rank {r} of {world_size} with the same arguments "
                                f"to recompute it, then merge.") from None
            if len(chunk["index"]):
                row_shape = chunk["features"].shape[1:]
            feats.update(zip(chunk["index"].tolist(), chunk["features"]))
            skipped.update(zip(chunk["failed_index"].tolist(), chunk["failed_error"].tolist()))
    lost = sorted(set(range(len(settings["files"]))) - feats.keys() - skipped.keys())
    if lost:
        for r in {i % world_size for i in lost}:
            (rank_dir(parts, r, world_size) / "done.json").unlink(missing_ok=True)
        raise DataError(f"{len(lost)} image(s) have no chunk in {str(parts)!r} (e.g. {settings['files'][lost[0]]!r}); "
                        f"rerun with the same arguments to compute them, then merge.")
    return feats, skipped


def _merge(out: Path, parts: Path, settings: dict[str, Any]) -> FeaturesResult:
    files = settings["files"]
    _remove_own_temps(out)
    feats, skipped = _collect(parts, settings)
    order = sorted(feats)
    if not order:
        remove_parts(parts)  # nothing to resume: a rerun would find the same
        raise DataError(f"None of the {len(files)} images could be read (e.g. {skipped.get(0, '?')}); "
                        f"nothing to write to {str(out)!r}.")
    array = np.stack([feats[i] for i in order])  # rows in the global file order: (N, ...)
    _write_array(out, array, settings)
    kept = [files[i] for i in order]
    skipped_list = [(files[i], skipped[i]) for i in sorted(skipped)]
    meta_path, list_path = sidecars(out)
    meta = {k: v for k, v in settings.items() if k not in ("files", "chunk_size")}
    meta.update(shape=list(array.shape), dtype=str(array.dtype), files=kept,
                skipped=[{"file": f, "error": e} for f, e in skipped_list])
    _write_json(meta_path, meta)
    atomic_write(list_path, lambda tmp: tmp.write_text("".join(f + "\n" for f in kept)))
    remove_parts(parts)
    if skipped_list:
        logger.warning("%d unreadable image(s) skipped, listed in %s", len(skipped_list), meta_path)
    logger.info("wrote %s %s (%d images, %d skipped)", out, array.shape, len(kept), len(skipped_list))
    return FeaturesResult(path=out, files=kept, skipped=skipped_list, shape=tuple(array.shape))


def _remove_own_temps(out: Path) -> None:
    """Half-written outputs or sidecars of a merge that was killed (only this output's, not its neighbours')."""
    for tmp in out.parent.glob(f".{glob.escape(out.name)}.*{TEMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)


def _write_array(out: Path, array: np.ndarray, settings: dict[str, Any]) -> None:
    if out.suffix.lower() == ".npy":
        atomic_write(out, lambda tmp: _save_npy(tmp, array))
        return
    from safetensors.numpy import save_file

    metadata = {"model": settings["model"], "pool": settings["pool"], "layers": json.dumps(settings["layers"])}
    atomic_write(out, lambda tmp: save_file({"features": np.ascontiguousarray(array)}, str(tmp), metadata=metadata))


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a file object: np.save would append '.npy' to the temporary name
        np.save(fh, array)


def load_features(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """A features file written by ``extract_features`` and its file list (one per row)."""
    path = Path(path)
    _, list_path = sidecars(path)
    if not list_path.exists():
        list_path = _legacy_file_list(path)
    if path.suffix.lower() == ".npy":
        array = np.load(path, allow_pickle=False)
    else:
        from safetensors.numpy import load_file

        array = load_file(str(path))["features"]
    files = list_path.read_text().splitlines() if list_path.exists() else []
    return array, files
