"""Where a ViT looks: attention rollout and last-layer class-token attention, overlaid on the image.

The maps come from ``model.forward_attention`` (the explicit attention path), so they work for models
whose ``forward`` uses the fused kernel. Rollout follows Abnar & Zuidema (2020): average the heads,
add the identity for the residual path, renormalise rows, multiply through the layers.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .data.images import load_image
from .errors import VitkitError
from .processor import ImageProcessor
from .runtime import ModelSpec, inference, resolve_model

logger = logging.getLogger(__name__)

METHODS = ("rollout", "last")


def _patch_scores(model: torch.nn.Module, matrix: torch.Tensor) -> torch.Tensor:
    """Per-patch scores from a token-to-token matrix (B, N, N): the class token's row when the model
    has one, else the mean over all query tokens. Returns (B, num_patches)."""
    prefix = model.num_prefix_tokens
    rows = matrix[:, 0] if model.config.class_token else matrix.mean(dim=1)  # (B, N)
    return rows[:, prefix:]


def _to_grid(model: torch.nn.Module, scores: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    h, w = model.grid_for(x.shape[-2], x.shape[-1])
    return scores.reshape(scores.shape[0], h, w)  # (B, h*w) -> (B, h, w)


def _check_discard_ratio(discard_ratio: float) -> None:
    if not 0.0 <= discard_ratio < 1.0:
        raise VitkitError(f"discard_ratio={discard_ratio} is not allowed: expected a fraction in [0, 1).")


def _rollout_from(model: torch.nn.Module, maps: list[torch.Tensor], x: torch.Tensor,
                  discard_ratio: float = 0.0) -> torch.Tensor:
    """Rollout of the blocks' attention ``maps`` (each (B, heads, N, N)) for images ``x``: (B, h, w)."""
    joint = None
    for attn in maps:
        a = attn.float().mean(dim=1)  # (B, heads, N, N) -> (B, N, N)
        if discard_ratio > 0:
            flat = a.reshape(a.shape[0], -1)  # (B, N, N) -> (B, N*N)
            ranked = flat.clone()
            ranked[:, 0] = float("inf")  # never drop the first token's attention to itself
            low = ranked.topk(int(flat.shape[1] * discard_ratio), dim=-1, largest=False).indices
            a = flat.scatter(-1, low, 0.0).reshape_as(a)  # (B, N*N) -> (B, N, N)
        a = a + torch.eye(a.shape[-1], device=a.device)  # the residual connection
        a = a / a.sum(dim=-1, keepdim=True)
        joint = a if joint is None else a @ joint
    return _to_grid(model, _patch_scores(model, joint), x)


def _map_pooled(model: torch.nn.Module) -> bool:
    """True when the pooled query is an attention-pool (MAP) head's: no class token, an ``attn_pool``."""
    return not model.config.class_token and getattr(model, "attn_pool", None) is not None


def _last_from(model: torch.nn.Module, maps: list[torch.Tensor] | None, x: torch.Tensor) -> torch.Tensor:
    """Last-layer attention of the pooled query for images ``x``: (B, h, w). Reads the blocks' ``maps``
    (from ``forward_attention``) unless the model has a MAP head, whose query is run on ``x`` instead."""
    if not _map_pooled(model):
        last = maps[-1].float().mean(dim=1)  # (B, heads, N, N) -> (B, N, N)
        return _to_grid(model, _patch_scores(model, last), x)
    pool = model.attn_pool
    tokens = model.forward_features(x)[:, model.num_prefix_tokens:]  # (B, N, C)
    B, N, C = tokens.shape
    q = pool.q(pool.latent.expand(B, -1, -1)).reshape(B, 1, pool.num_heads, pool.head_dim).transpose(1, 2)
    # (B, N, 2C) -> (2, B, heads, N, head_dim)
    k = pool.kv(tokens).reshape(B, N, 2, pool.num_heads, pool.head_dim).permute(2, 0, 3, 1, 4)[0]
    weights = ((q * pool.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, heads, 1, N)
    return _to_grid(model, weights.float().mean(dim=1)[:, 0], x)


@torch.inference_mode()
def attention_rollout(model: torch.nn.Module, x: torch.Tensor, *, discard_ratio: float = 0.0) -> torch.Tensor:
    """Attention rollout over all blocks for images (B, C, H, W): a (B, h, w) map over the patch grid.

    ``discard_ratio`` zeroes that fraction of the weakest attention weights per layer (not the
    prefix-token column), which sharpens the map.
    """
    _check_discard_ratio(discard_ratio)
    return _rollout_from(model, model.eval().forward_attention(x), x, discard_ratio)


@torch.inference_mode()
def last_layer_attention(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The pooled query's attention over patches in the last layer, heads averaged: (B, h, w).

    With a class token: its row in the last block. With an attention-pool (MAP) head: the learned
    query's weights. Otherwise (average pooling): the mean attention each patch receives.
    """
    model.eval()
    return _last_from(model, None if _map_pooled(model) else model.forward_attention(x), x)


Box = tuple[float, float, float, float]


@torch.inference_mode()
def _heatmaps(net: torch.nn.Module, img: Image.Image, methods: tuple[str, ...],
              discard_ratio: float) -> tuple[dict[str, np.ndarray], Box]:
    """Unscaled (h, w) maps of ``img`` for each of ``methods``, from the model's own preprocessing (the pixels
    predict and features give it) and at most one ``forward_attention`` pass; and the box of ``img`` (left, top,
    right, bottom) that the model saw."""
    processor = ImageProcessor.from_model(net)
    x = processor(img).to(next(net.parameters()).device)  # (1, C, H, W)
    if "rollout" in methods:
        _check_discard_ratio(discard_ratio)
    maps = net.forward_attention(x) if "rollout" in methods or not _map_pooled(net) else None
    return {m: (_rollout_from(net, maps, x, discard_ratio) if m == "rollout" else _last_from(net, maps, x))[0]
            .cpu().numpy() for m in methods}, processor.view_box(img.width, img.height)


def _min_max(heat: np.ndarray) -> np.ndarray:
    """``heat`` scaled to [0, 1] (zeros when it is constant)."""
    return (heat - heat.min()) / max(float(heat.max() - heat.min()), 1e-12)


# ---------------------------------------------------------------------------------------------- drawing
def overlay(image: Image.Image, heatmap: np.ndarray | torch.Tensor, *, alpha: float = 0.5,
            cmap: str = "jet", box: Box | None = None) -> Image.Image:
    """Blend a (h, w) map, scaled to [0, 1] and stretched over ``box`` (left, top, right, bottom; default: the
    whole image), over the image (RGB); outside the box the image is shown as it is."""
    import matplotlib

    left, top, right, bottom = (round(v) for v in (box or (0, 0, image.width, image.height)))
    heat = _min_max(torch.as_tensor(heatmap, dtype=torch.float32).cpu().numpy())
    size = (max(right - left, 1), max(bottom - top, 1))
    heat_img = Image.fromarray(heat.astype(np.float32), mode="F").resize(size, Image.Resampling.BILINEAR)
    colored = matplotlib.colormaps[cmap](np.clip(np.asarray(heat_img), 0, 1))[..., :3]  # (h, w, 3) in [0, 1]
    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    region = base[top:top + size[1], left:left + size[0]]
    base[top:top + size[1], left:left + size[0]] = (1 - alpha) * region + alpha * colored[:region.shape[0],
                                                                                          :region.shape[1]]
    return Image.fromarray(np.clip(base * 255 + 0.5, 0, 255).astype(np.uint8))


def _panels(image: Image.Image, overlays: dict[str, Image.Image], out: Path) -> None:
    """Original and overlays side by side, titled, via matplotlib's object API (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = 1 + len(overlays)
    aspect = image.height / image.width
    fig = Figure(figsize=(4 * n, 4 * aspect + 0.5))
    FigureCanvasAgg(fig)
    for i, (title, img) in enumerate([("image", image), *overlays.items()]):
        ax = fig.add_subplot(1, n, i + 1)
        ax.imshow(img)
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, format="png", dpi=100)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise VitkitError(f"method={method!r} is not supported: expected one of {', '.join(METHODS)}.")


def attention_map(image: str | os.PathLike | Image.Image, model: ModelSpec, *, weights: Any = None,
                  method: str = "rollout", discard_ratio: float = 0.0,
                  device: str | torch.device | None = None) -> tuple[Image.Image, np.ndarray]:
    """The part of the image the model sees (its own preprocessing: e.g. the centre crop) and the attention map
    (h, w) in [0, 1] over that part, for ``method`` 'rollout' or 'last'.
    """
    _check_method(method)
    net = resolve_model(model, weights=weights, device=device)
    img = load_image(image) if not isinstance(image, Image.Image) else image.convert("RGB")
    with inference(net, device):
        heats, box = _heatmaps(net, img, (method,), discard_ratio)
    return img.crop(tuple(round(v) for v in box)), _min_max(heats[method])


def save_attention_map(image: str | os.PathLike | Image.Image, out: str | os.PathLike, *, model: ModelSpec,
                       weights: Any = None, method: str = "rollout", panels: bool = False, alpha: float = 0.5,
                       discard_ratio: float = 0.0, max_size: int = 1024,
                       device: str | torch.device | None = None) -> Path:
    """Write the attention map over the image as a PNG with the image's aspect (longest side at most
    ``max_size``). ``panels=True`` writes image | rollout | last-layer attention side by side instead."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise VitkitError(f"--out {str(out)!r} must be a .png file.")
    if not panels:
        _check_method(method)
    net = resolve_model(model, weights=weights, device=device)
    img = load_image(image) if not isinstance(image, Image.Image) else image.convert("RGB")
    with inference(net, device):
        heats, box = _heatmaps(net, img, METHODS if panels else (method,), discard_ratio)
    shown = img.copy()
    shown.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)  # keeps the aspect
    scale = shown.width / img.width
    box = (box[0] * scale, box[1] * scale, box[2] * scale, box[3] * scale)  # the model's view, in shown pixels
    overlays = {m: overlay(shown, heat, alpha=alpha, box=box) for m, heat in heats.items()}  # each map scaled
    out.parent.mkdir(parents=True, exist_ok=True)
    if panels:
        _panels(shown, {"attention rollout" if k == "rollout" else "last-layer attention": v
                        for k, v in overlays.items()}, out)
    else:
        overlays[method].save(out, format="PNG")
    logger.info("wrote %s", out)
    return out
