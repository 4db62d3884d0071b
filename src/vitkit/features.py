"""Batched feature extraction over image files: resumable, splittable across processes, mergeable.

Rank ``r`` of ``w`` takes files ``r, r + w, ...`` and saves one chunk per batch; the on-disk layout
(parts, chunks, locks, merge, sidecars) is ``vitkit.featurestore``'s. Without an output file the
features come back in memory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .batching import batches, chunks
from .choices import FEATURE_POOL_ALIASES, FEATURE_POOLS, FEATURE_PRECISIONS
from .data.images import expand_inputs, list_images
from .errors import ConfigError, DataError, OutputError, keyword
from .export import CastIO, convert_precision
from .featurestore import (
    OUTPUT_SUFFIXES,
    FeaturesResult,
    check_outputs,
    load_features,
    mark_done,
    merge_features,
    merge_if_complete,
    parts_dir,
    prepare_manifest,
    rank_dir,
    rank_lock,
    remove_if_empty,
    resolve_rank,
    save_chunk,
    sidecars,
    sound_chunk,
    weights_fingerprint,
)
from .fileio import remove_stale_temps
from .graphmodel import StandIn
from .inference import plan_for
from .model import name_of
from .patches import PatchProcessor, processor_for
from .processor import ImageInput, ImageProcessor
from .runtime import ModelSpec, borrowed, model_device, pick_device, resolve_model

logger = logging.getLogger(__name__)

__all__ = ["OUTPUT_SUFFIXES", "POOLS", "POOL_ALIASES", "FeaturesResult", "check_pool", "compute_features",
           "extract_features", "load_features", "merge_features", "pool_tokens", "resolve_rank", "sidecars"]

# The model's own pooling vocabulary (ViTConfig.global_pool), plus 'default': what its classifier reads
POOLS = FEATURE_POOLS
# Names of vitkit 0.1's features command, still accepted (and stored under the names above)
POOL_ALIASES = FEATURE_POOL_ALIASES


# ---------------------------------------------------------------------------------------------- pooling
def pool_tokens(model: torch.nn.Module, tokens: torch.Tensor, pool: str, mask: torch.Tensor | None = None
                ) -> torch.Tensor:
    """Tokens (B, prefix + N, D) to features: (B, D), or (B, prefix + N, D) for 'none'.

    'default' is what the model's classifier reads (``forward_head(pre_logits=True)``); the others are
    ``model.pool``'s modes: 'token' the class token, 'avg' the mean patch token, 'map' the attention-pool head.
    ``mask`` (B, prefix + N): the real tokens of padded patch sequences.
    """
    if pool == "default":
        return model.forward_head(tokens, pre_logits=True, mask=mask)
    return model.pool(tokens, pool, mask=mask)


def check_pool(model: torch.nn.Module, pool: str) -> str:
    """``pool`` under its canonical name (old aliases mapped), or a clear error for one the model cannot do."""
    pool = POOL_ALIASES.get(pool, pool)
    if pool not in POOLS:
        raise ConfigError(f"pool={pool!r} is not supported: expected one of {', '.join(POOLS)}.")
    name = name_of(model)
    if pool == "token" and not model.config.class_token:
        raise ConfigError(f"Model {name!r} has no class token, so pool='token' is not available; "
                          f"use 'avg', 'map' or 'default'.")
    if pool == "map" and getattr(model, "attn_pool", None) is None:
        raise ConfigError(f"Model {name!r} has no attention-pool (MAP) head; use 'token', 'avg' or 'default'.")
    return pool


@torch.inference_mode()
def compute_features(model: torch.nn.Module, x: Any, *, pool: str = "default",
                     layers: Sequence[int] | None = None) -> torch.Tensor:
    """Features of a batch (B, C, H, W) or a ``PatchBatch`` (images at their own aspect ratio): (B, ...) from
    the last block, or (B, len(layers), ...) from the given blocks (each with the final norm applied, as
    ``forward_intermediates(norm=True)``)."""
    pool = check_pool(model, pool)
    if isinstance(model, StandIn):  # an exported graph: the pooled features it was written with
        if layers or pool != "default" or hasattr(x, "patches"):
            raise ConfigError(f"{model.model_name!r} is an exported graph ({model.description}): it gives the "
                              f"model's pooled features (pool='default') of whole images only; drop layers, pool "
                              f"and max_patches, or use the model itself.")
        return model.features(x).float()
    if hasattr(x, "patches"):  # a PatchBatch: one pooled vector per image, padding ignored
        if layers or pool == "none":
            raise ConfigError("Images at their own aspect ratio (max_patches) give one pooled feature per image "
                              "from the last block: drop layers and pool='none', or drop max_patches.")
        tokens, mask = model.forward_patch_features(x.patches.to(model.pos_embed.dtype), x.mask, x.grids)
        return pool_tokens(model, tokens, pool, mask).float()
    x = x.to(model.pos_embed.dtype)  # a bf16 copy (``features_model``) takes bf16 images; features come back fp32
    if not layers:
        return pool_tokens(model, model.forward_features(x), pool).float()
    outs = model.forward_intermediates(x, list(layers), norm=True, output_fmt="NLC", return_prefix_tokens=True,
                                       intermediates_only=True)
    # each entry (patches (B, N, D), prefix (B, P, D)) -> tokens (B, P + N, D)
    per_layer = [pool_tokens(model, torch.cat([prefix, patches], dim=1), pool) for patches, prefix in outs]
    return torch.stack(per_layer, dim=1).float()  # L x (B, ...) -> (B, L, ...)




def features_model(net: torch.nn.Module, precision: str) -> torch.nn.Module:
    """The model that computes features in ``precision``: ``net`` itself for fp32, else a converted copy (bf16
    weights and activations, or int8 dynamic quantization of the Linear layers; see ``optimize_for_inference``).
    'auto' takes the precision ``optimize_for_inference`` would (never bf16 without native bf16). Features need
    the model's tokens, so they run in eager torch (the compile and ONNX Runtime paths give the output only)."""
    if precision not in FEATURE_PRECISIONS:
        raise ConfigError(f"precision={precision!r} is not supported for features: use one of "
                          f"{', '.join(FEATURE_PRECISIONS)}.")
    if isinstance(net, StandIn):  # an exported graph runs in the precision it was written in
        if precision not in ("fp32", "auto"):
            raise ConfigError(f"{net.model_name!r} is an exported graph ({net.description}): precision="
                              f"{precision!r} does not apply to it; drop it.")
        return net
    if precision == "auto":
        precision = plan_for(model_device(net), "auto", "eager").precision
    if precision == "fp32":
        return net
    work = convert_precision(net, precision)
    return work.module if isinstance(work, CastIO) else work  # compute_features casts the images itself


# ---------------------------------------------------------------------------------------------- the run
def _run_rank(model: torch.nn.Module, processor: ImageProcessor | PatchProcessor, files: list[str], folder: Path, *,
              mine: list[int], chunk_size: int, pool: str, layers: list[int] | None, device: torch.device,
              num_workers: int) -> tuple[int, int]:
    """Compute the chunks of this rank that are not on disk yet. Returns (computed, reused) image counts."""
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(folder)  # half-written chunks of a killed run
    groups = chunks(mine, chunk_size)
    todo = [(k, rows) for k, rows in enumerate(groups) if not sound_chunk(folder / f"chunk_{k:06d}.npz", rows)]
    if todo:
        (folder / "done.json").unlink(missing_ok=True)
    reused = len(mine) - sum(len(rows) for _, rows in todo)
    if reused:
        logger.info("resuming: %d of %d images already done in %s", reused, len(mine), folder)
    bar = tqdm(total=len(mine), initial=reused, desc="features", unit="img", disable=None)
    with bar:
        for batch in batches(processor, files, [rows for _, rows in todo], workers=num_workers):
            feats = None if batch.pixels is None else compute_features(model, batch.pixels.to(device), pool=pool,
                                                                          layers=layers)  # (B, C, H, W), PatchBatch
            k = todo[batch.number][0]
            save_chunk(folder / f"chunk_{k:06d}.npz", batch.rows, batch.errors,
                       None if feats is None else feats.float().cpu().numpy())
            bar.update(len(batch.rows) + len(batch.errors))
    mark_done(folder, len(groups), len(mine))
    return len(mine) - reused, reused


def extract_features(
    inputs: ImageInput | Iterable[ImageInput],
    out: str | os.PathLike | None = None,
    *,
    model: ModelSpec | None = None,
    weights: Any = None,
    pool: str = "default",
    layers: Sequence[int] | None = None,
    batch_size: int = 32,
    rank: int | None = None,
    world_size: int | None = None,
    device: str | torch.device | None = None,
    num_workers: int = 4,
    overwrite: bool = False,
    precision: str = "fp32",
    max_patches: int | None = None,
) -> FeaturesResult:
    """Features of every image in ``inputs`` (files and folders), in memory or written to ``out``.

    Without ``out`` (``extract_features(images, model)``) the array comes back as ``result.features``,
    one row per readable image in ``result.files`` order; ``inputs`` may then also hold PIL images or
    uint8 arrays. With ``out`` (.npy or .safetensors) the run is resumable: an interrupted run resumes
    where it stopped when rerun with the same arguments. With ``rank``/``world_size`` (or torchrun's
    RANK/WORLD_SIZE) each process computes its share; the last to finish merges the parts. Unreadable
    images are skipped and listed in the result (and in ``<out>.json``). ``max_patches``: each image at its
    own aspect ratio, resized to at most this many patches (one pooled feature per image; a native-aspect
    checkpoint runs that way by default).
    """
    out, model = _out_and_model(out, model)
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} is not allowed: expected a positive integer.")
    if num_workers < 0:
        raise ConfigError(f"num_workers={num_workers} is not allowed: expected 0 (load in this process) or more.")
    if out is None:
        items = _in_memory_inputs(inputs)
        net = resolve_model(model, weights=weights, device=_rank_device(device))
        with borrowed(net, device):
            return _extract_in_memory(items, net, pool=pool, layers=layers, batch_size=batch_size,
                                      num_workers=num_workers, precision=precision, max_patches=max_patches)
    out = Path(out)
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        where = keyword("out", str(out))
        raise OutputError(f"{where} has an unknown format: expected a file ending in .npy or .safetensors.",
                          hints=(where,))
    rank, world_size = resolve_rank(rank, world_size)
    files = [str(p) for p in list_images(inputs)]
    check_outputs(out, overwrite=overwrite)
    # an output beside an unfinished merge's parts is that merge's (killed) product: finish it
    if out.exists() and not overwrite and not (parts_dir(out) / "manifest.json").exists():
        other, again = keyword("out"), keyword("overwrite", True)
        raise DataError(f"{str(out)!r} already exists. Choose another {other}, delete it, or pass {again}.",
                        hints=(other, again))
    net = resolve_model(model, weights=weights, device=_rank_device(device))
    with borrowed(net, device):
        return _extract(files, out, net, model=model, weights=weights, pool=pool, layers=layers,
                        batch_size=batch_size, rank=rank, world_size=world_size, num_workers=num_workers,
                        overwrite=overwrite, precision=precision, max_patches=max_patches)


def _out_and_model(out: Any, model: ModelSpec | None) -> tuple[Any, ModelSpec]:
    """Accept ``extract_features(images, model)``: a second argument that is a model, not an output file."""
    if model is not None:
        return out, model
    if out is not None and (isinstance(out, torch.nn.Module) or Path(out).suffix.lower() not in OUTPUT_SUFFIXES):
        return None, out
    raise ConfigError("extract_features needs a model: extract_features(images, model) for an array in memory, "
                      "or extract_features(images, 'feats.npy', model=...) for a file.")


def _in_memory_inputs(inputs: ImageInput | Iterable[ImageInput]) -> list[ImageInput]:
    """Paths expanded (folders searched), PIL images and arrays kept as they are."""
    if isinstance(inputs, (str, os.PathLike, Image.Image, np.ndarray)):
        inputs = [inputs]
    return expand_inputs(list(inputs))


def _extract_in_memory(items: list[ImageInput], net: torch.nn.Module, *, pool: str, layers: Sequence[int] | None,
                       batch_size: int, num_workers: int, precision: str, max_patches: int | None
                       ) -> FeaturesResult:
    pool = check_pool(net, pool)
    work = features_model(net, precision)
    processor = processor_for(net, max_patches=max_patches)
    names = [str(item) if isinstance(item, (str, os.PathLike)) else f"<image {i}>" for i, item in enumerate(items)]
    rows: list[int] = []
    arrays: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    for batch in batches(processor, items, chunks(range(len(items)), batch_size), workers=num_workers):
        skipped += [(names[i], str(exc)) for i, exc in batch.errors.items()]
        if batch.pixels is not None:
            x = batch.pixels.to(model_device(net))  # (B, C, H, W) or a PatchBatch
            arrays.append(compute_features(work, x, pool=pool, layers=layers).float().cpu().numpy())
            rows += batch.rows
    if not rows:
        raise DataError(f"None of the {len(items)} images could be read (e.g. {skipped[0][1]}).")
    features = np.concatenate(arrays)  # (N, ...)
    return FeaturesResult(path=None, files=[names[i] for i in rows], skipped=skipped, shape=tuple(features.shape),
                          computed=len(rows), features=features)


def _extract(files: list[str], out: Path, net: torch.nn.Module, *, model: ModelSpec, weights: Any, pool: str,
             layers: Sequence[int] | None, batch_size: int, rank: int, world_size: int,
             num_workers: int, overwrite: bool, precision: str, max_patches: int | None) -> FeaturesResult:
    pool = check_pool(net, pool)
    work = features_model(net, precision)
    processor = processor_for(net, max_patches=max_patches)
    layers = [int(i) for i in layers] if layers else None
    name = name_of(net) if isinstance(model, torch.nn.Module) else str(model)
    settings = {"model": str(name), "weights": None if weights is None else str(weights), "pool": pool,
                "layers": layers, "processor": processor.to_dict(), "world_size": world_size, "files": files,
                "precision": precision, "weights_digest": weights_fingerprint(net.state_dict())}
    parts = parts_dir(out)
    lock = rank_lock(parts, out, rank, world_size, overwrite=overwrite)
    try:
        chunk_size = prepare_manifest(parts, settings, batch_size)
        computed, reused = _run_rank(work, processor, files, rank_dir(parts, rank, world_size),
                                     mine=list(range(rank, len(files), world_size)), chunk_size=chunk_size,
                                     pool=pool, layers=layers, device=model_device(net), num_workers=num_workers)
        result = merge_if_complete(out)
    except BaseException:
        lock.release()
        remove_if_empty(parts)
        raise
    lock.release()
    if result is None:
        logger.info("rank %d of %d done; the last rank to finish merges the parts", rank, world_size)
        result = FeaturesResult(path=None)
    result.computed, result.reused = computed, reused
    return result


def _rank_device(device: str | torch.device | None) -> torch.device:
    """The given device (checked), else this process's GPU under torchrun (LOCAL_RANK), else the default."""
    return pick_device(device, int(os.environ.get("LOCAL_RANK", 0)))


