"""Batched feature extraction over image files: resumable, splittable across processes, mergeable.

Layout while running, for ``--out feats.npy``::

    feats.npy.parts/manifest.json                 settings and the global file list (row order)
    feats.npy.parts/rank0-of-1/chunk_000000.npz   one batch: features, row indices, failed files
    feats.npy.parts/rank0-of-1/done.json          written when the rank has every chunk

Each chunk is written to a temporary name and renamed, so a chunk on disk is complete; a rerun with
the same settings skips the chunks that exist. Rank ``r`` of ``w`` takes files ``r, r + w, ...``.
When every rank is done the parts are merged into ``feats.npy`` (or ``.safetensors``, key
``features``) with ``feats.files.txt`` (one file per row) and ``feats.json`` (settings, shape, files
and the skipped files with their errors) beside it, and the parts folder is removed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .data.images import list_images
from .errors import ConfigError, DataError, ImageError, OutputError
from .fileio import atomic_write
from .processor import ImageProcessor
from .runtime import ModelSpec, inference, model_device, pick_device, resolve_model

logger = logging.getLogger(__name__)

POOLS = ("default", "cls", "avg", "map", "tokens")
FORMATS = (".npy", ".safetensors")


@dataclass
class FeaturesResult:
    """What a run produced. ``path`` is None while other ranks are still running."""

    path: Path | None
    files: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    shape: tuple[int, ...] | None = None
    computed: int = 0
    reused: int = 0


# ---------------------------------------------------------------------------------------------- pooling
def pool_tokens(model: torch.nn.Module, tokens: torch.Tensor, pool: str) -> torch.Tensor:
    """Tokens (B, prefix + N, D) to features: (B, D), or (B, prefix + N, D) for 'tokens'.

    'default' is what the model's classifier reads (``forward_head(pre_logits=True)``); 'cls' the
    class token, 'avg' the mean patch token, 'map' the model's attention-pool head.
    """
    prefix = model.num_prefix_tokens
    if pool == "default":
        return model.forward_head(tokens, pre_logits=True)
    if pool == "cls":
        return tokens[:, 0]
    if pool == "avg":
        return tokens[:, prefix:].mean(dim=1)
    if pool == "map":
        return model.attn_pool(tokens[:, prefix:])
    return tokens


def check_pool(model: torch.nn.Module, pool: str) -> None:
    """Raise a clear error for a pooling the model cannot do."""
    if pool not in POOLS:
        raise ConfigError(f"pool={pool!r} is not supported: expected one of {', '.join(POOLS)}.")
    name = getattr(model, "model_name", type(model).__name__)
    if pool == "cls" and not model.config.class_token:
        raise ConfigError(f"Model {name!r} has no class token, so pool='cls' is not available; "
                          f"use 'avg', 'map' or 'default'.")
    if pool == "map" and getattr(model, "attn_pool", None) is None:
        raise ConfigError(f"Model {name!r} has no attention-pool (MAP) head; use 'cls', 'avg' or 'default'.")


@torch.inference_mode()
def compute_features(model: torch.nn.Module, x: torch.Tensor, *, pool: str = "default",
                     layers: Sequence[int] | None = None) -> torch.Tensor:
    """Features of a batch (B, C, H, W): (B, ...) from the last block, or (B, len(layers), ...) from
    the given blocks (each with the final norm applied, as ``forward_intermediates(norm=True)``)."""
    if not layers:
        return pool_tokens(model, model.forward_features(x), pool)
    outs = model.forward_intermediates(x, list(layers), norm=True, output_fmt="NLC", return_prefix_tokens=True,
                                       intermediates_only=True)
    # each entry (patches (B, N, D), prefix (B, P, D)) -> tokens (B, P + N, D)
    per_layer = [pool_tokens(model, torch.cat([prefix, patches], dim=1), pool) for patches, prefix in outs]
    return torch.stack(per_layer, dim=1)  # L x (B, ...) -> (B, L, ...)


# ---------------------------------------------------------------------------------------------- files
def _write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1)))


def _parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def _rank_dir(parts: Path, rank: int, world_size: int) -> Path:
    return parts / f"rank{rank}-of-{world_size}"


def _sidecars(out: Path) -> tuple[Path, Path]:
    stem = out.with_suffix("")
    return stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".files.txt")


def resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Rank and world size from the arguments, else torchrun's RANK / WORLD_SIZE, else (0, 1)."""
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank={rank}, world_size={world_size} is not a valid split: expected "
                          f"0 <= rank < world_size.")
    return rank, world_size


def _prepare_manifest(parts: Path, settings: dict[str, Any], chunk_size: int) -> int:
    """Write the manifest, or check that an earlier run's has the same settings. Returns the chunk size
    (an earlier run's, so that its chunks stay valid whatever batch size a rerun asks for)."""
    path = parts / "manifest.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old["settings"] != settings:
            changed = sorted(k for k in settings if old["settings"].get(k) != settings[k])
            raise DataError(f"{str(parts)!r} holds an unfinished run with other settings ({', '.join(changed)}). "
                            f"Rerun with the same arguments to resume it, or delete that folder to start over.")
        return int(old["chunk_size"])
    parts.mkdir(parents=True, exist_ok=True)
    _write_json(path, {"settings": settings, "chunk_size": chunk_size})
    return chunk_size


# ---------------------------------------------------------------------------------------------- the run
def _load_one(processor: ImageProcessor, path: str) -> torch.Tensor | str:
    try:
        return processor.preprocess_one(path)
    except ImageError as exc:
        return str(exc)


def _chunks(indices: list[int], size: int) -> list[list[int]]:
    return [indices[i:i + size] for i in range(0, len(indices), size)]


def _prefetched(executor: ThreadPoolExecutor, processor: ImageProcessor, files: list[str],
                todo: list[tuple[int, list[int]]]) -> Iterator[tuple[int, list[int], list[torch.Tensor | str]]]:
    """Yield (chunk number, rows, loaded images) while the next chunk's images load in the background."""
    def submit(rows: list[int]) -> list[Future]:
        return [executor.submit(_load_one, processor, files[i]) for i in rows]

    pending = submit(todo[0][1]) if todo else []
    for n, (k, rows) in enumerate(todo):
        current = pending
        pending = submit(todo[n + 1][1]) if n + 1 < len(todo) else []
        yield k, rows, [f.result() for f in current]


def _save_chunk(path: Path, rows: list[int], loaded: list[torch.Tensor | str], feats: torch.Tensor | None) -> None:
    ok = [r for r, item in zip(rows, loaded) if not isinstance(item, str)]
    failed = [(r, item) for r, item in zip(rows, loaded) if isinstance(item, str)]
    for _, err in failed:
        logger.info("skipped unreadable image: %s", err)
    arrays = {"features": feats.float().cpu().numpy() if feats is not None else np.zeros((0,), np.float32),
              "index": np.asarray(ok, dtype=np.int64),
              "failed_index": np.asarray([r for r, _ in failed], dtype=np.int64),
              "failed_error": np.asarray([e for _, e in failed], dtype=np.str_)}

    atomic_write(path, lambda tmp: _save_npz(tmp, arrays))


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _run_rank(model: torch.nn.Module, processor: ImageProcessor, files: list[str], rank_dir: Path, *,
              mine: list[int], chunk_size: int, pool: str, layers: list[int] | None, device: torch.device,
              num_workers: int) -> tuple[int, int]:
    """Compute the chunks of this rank that are not on disk yet. Returns (computed, reused) image counts."""
    rank_dir.mkdir(parents=True, exist_ok=True)
    chunks = _chunks(mine, chunk_size)
    todo = [(k, rows) for k, rows in enumerate(chunks) if not (rank_dir / f"chunk_{k:06d}.npz").exists()]
    reused = len(mine) - sum(len(rows) for _, rows in todo)
    if reused:
        logger.info("resuming: %d of %d images already done in %s", reused, len(mine), rank_dir)
    bar = tqdm(total=len(mine), initial=reused, desc="features", unit="img", disable=None)
    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as executor, bar:
        for k, rows, loaded in _prefetched(executor, processor, files, todo):
            images = [item for item in loaded if not isinstance(item, str)]
            feats = None
            if images:
                x = torch.stack(images).to(device)  # list of (C, H, W) -> (B, C, H, W)
                feats = compute_features(model, x, pool=pool, layers=layers)
            _save_chunk(rank_dir / f"chunk_{k:06d}.npz", rows, loaded, feats)
            bar.update(len(rows))
    _write_json(rank_dir / "done.json", {"chunks": len(chunks), "images": len(mine)})
    return len(mine) - reused, reused


def extract_features(
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    out: str | os.PathLike,
    *,
    model: ModelSpec,
    weights: Any = None,
    pool: str = "default",
    layers: Sequence[int] | None = None,
    batch_size: int = 32,
    rank: int | None = None,
    world_size: int | None = None,
    device: str | torch.device | None = None,
    num_workers: int = 4,
    overwrite: bool = False,
) -> FeaturesResult:
    """Features of every image in ``inputs`` (files and folders) written to ``out`` (.npy or .safetensors).

    Unreadable images are skipped and listed in the result and in ``<out>.json``. An interrupted run
    resumes where it stopped when rerun with the same arguments. With ``rank``/``world_size`` (or
    torchrun's RANK/WORLD_SIZE) each process computes its share; the last to finish merges the parts.
    """
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise OutputError(f"--out {str(out)!r} has an unknown format: expected a file ending in .npy or .safetensors.")
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} is not allowed: expected a positive integer.")
    if num_workers < 0:
        raise ConfigError(f"num_workers={num_workers} is not allowed: expected 0 (load in this process) or more.")
    rank, world_size = resolve_rank(rank, world_size)
    files = [str(p) for p in list_images(inputs)]
    if out.exists() and not overwrite:
        raise DataError(f"{str(out)!r} already exists. Choose another --out, delete it, or pass --overwrite.")
    net = resolve_model(model, weights=weights, device=_rank_device(device))
    with inference(net, device):
        return _extract(files, out, net, model=model, weights=weights, pool=pool, layers=layers,
                        batch_size=batch_size, rank=rank, world_size=world_size, num_workers=num_workers)


def _extract(files: list[str], out: Path, net: torch.nn.Module, *, model: ModelSpec, weights: Any, pool: str,
             layers: Sequence[int] | None, batch_size: int, rank: int, world_size: int,
             num_workers: int) -> FeaturesResult:
    check_pool(net, pool)
    processor = ImageProcessor.from_model(net)
    layers = [int(i) for i in layers] if layers else None
    name = getattr(net, "model_name", type(net).__name__) if isinstance(model, torch.nn.Module) else str(model)
    settings = {"model": str(name), "weights": None if weights is None else str(weights), "pool": pool,
                "layers": layers, "processor": processor.to_dict(), "world_size": world_size, "files": files}
    parts = _parts_dir(out)
    chunk_size = _prepare_manifest(parts, settings, batch_size)
    computed, reused = _run_rank(net, processor, files, _rank_dir(parts, rank, world_size),
                                 mine=list(range(rank, len(files), world_size)), chunk_size=chunk_size, pool=pool,
                                 layers=layers, device=model_device(net), num_workers=num_workers)
    result = _merge_if_complete(out, lock=True)
    if result is None:
        logger.info("rank %d of %d done; the last rank to finish merges the parts", rank, world_size)
        result = FeaturesResult(path=None)
    result.computed, result.reused = computed, reused
    return result


def _rank_device(device: str | torch.device | None) -> torch.device:
    """The given device (checked), else this process's GPU under torchrun (LOCAL_RANK), else the default."""
    return pick_device(device, int(os.environ.get("LOCAL_RANK", 0)))


# ---------------------------------------------------------------------------------------------- merging
def _settings(parts: Path) -> dict[str, Any]:
    """The run's settings from the parts folder's manifest."""
    return json.loads((parts / "manifest.json").read_text())["settings"]


def _missing_ranks(parts: Path, world_size: int) -> list[int]:
    """The ranks that have not written their done.json yet."""
    return [r for r in range(world_size) if not (_rank_dir(parts, r, world_size) / "done.json").exists()]


def _merge_if_complete(out: Path, *, lock: bool) -> FeaturesResult | None:
    parts = _parts_dir(out)
    settings = _settings(parts)
    if _missing_ranks(parts, settings["world_size"]):
        return None
    if lock:
        try:  # only one process merges; the others leave it to that one
            os.close(os.open(parts / "merge.lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return None
    return _merge(out, parts, settings)


def merge_features(out: str | os.PathLike) -> FeaturesResult:
    """Merge the parts of a split run into ``out`` (normally automatic when the last rank finishes)."""
    out = Path(out)
    parts = _parts_dir(out)
    if not (parts / "manifest.json").exists():
        raise DataError(f"No parts to merge: {str(parts)!r} does not exist. Run `vitkit features` with the same "
                        f"--out on every rank first.")
    settings = _settings(parts)
    missing = _missing_ranks(parts, settings["world_size"])
    if missing:
        raise DataError(f"Cannot merge {str(out)!r} yet: rank(s) {', '.join(map(str, missing))} of "
                        f"{settings['world_size']} have not finished. Rerun them (they resume), then merge.")
    return _merge(out, parts, settings)


def _read_chunks(parts: Path, world_size: int) -> Iterator[dict[str, np.ndarray]]:
    for r in range(world_size):
        for path in sorted(_rank_dir(parts, r, world_size).glob("chunk_*.npz")):
            with np.load(path, allow_pickle=False) as data:
                yield {k: data[k] for k in data.files}


def _merge(out: Path, parts: Path, settings: dict[str, Any]) -> FeaturesResult:
    files = settings["files"]
    feats: dict[int, np.ndarray] = {}
    skipped: dict[int, str] = {}
    for chunk in _read_chunks(parts, settings["world_size"]):
        feats.update(zip(chunk["index"].tolist(), chunk["features"]))
        skipped.update(zip(chunk["failed_index"].tolist(), chunk["failed_error"].tolist()))
    order = sorted(feats)
    if not order:
        raise DataError(f"None of the {len(files)} images could be read (e.g. {skipped.get(0, '?')}); "
                        f"nothing to write to {str(out)!r}.")
    array = np.stack([feats[i] for i in order])  # rows in the global file order: (N, ...)
    _write_array(out, array, settings)
    kept = [files[i] for i in order]
    skipped_list = [(files[i], skipped[i]) for i in sorted(skipped)]
    meta_path, list_path = _sidecars(out)
    meta = {k: v for k, v in settings.items() if k not in ("files", "chunk_size")}
    meta.update(shape=list(array.shape), dtype=str(array.dtype), files=kept,
                skipped=[{"file": f, "error": e} for f, e in skipped_list])
    _write_json(meta_path, meta)
    atomic_write(list_path, lambda tmp: tmp.write_text("".join(f + "\n" for f in kept)))
    shutil.rmtree(parts, ignore_errors=True)
    if skipped_list:
        logger.warning("%d unreadable image(s) skipped, listed in %s", len(skipped_list), meta_path)
    logger.info("wrote %s %s (%d images, %d skipped)", out, array.shape, len(kept), len(skipped_list))
    return FeaturesResult(path=out, files=kept, skipped=skipped_list, shape=tuple(array.shape))


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
    _, list_path = _sidecars(path)
    if path.suffix.lower() == ".npy":
        array = np.load(path, allow_pickle=False)
    else:
        from safetensors.numpy import load_file

        array = load_file(str(path))["features"]
    files = list_path.read_text().splitlines() if list_path.exists() else []
    return array, files
