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

from .checks import number_between
from .choices import ATTENTION_METHODS
from .data.images import load_image
from .errors import ConfigError, OutputError, keyword
from .graphmodel import StandIn
from .labels import class_scores, is_multi_label, labels_for_model
from .model import name_of
from .patches import processor_for
from .registry import is_registered
from .runtime import ModelSpec, borrowed, eval_mode, resolve_model

logger = logging.getLogger(__name__)

METHODS = ATTENTION_METHODS


def _patch_scores(model: torch.nn.Module, matrix: torch.Tensor) -> torch.Tensor:
    """Per-patch scores from a token-to-token matrix (B, N, N): the class token's row when the model
    has one, else the mean over all query tokens. Returns (B, num_patches)."""
    prefix = model.num_prefix_tokens
    rows = matrix[:, 0] if model.config.class_token else matrix.mean(dim=1)  # (B, N)
    return rows[:, prefix:]


def _to_grid(model: torch.nn.Module, scores: torch.Tensor, x: Any) -> torch.Tensor:
    """Per-patch scores (B, h*w) on the patch grid of ``x``: images (B, C, H, W), or one image's patch
    sequence (a ``PatchBatch`` of one, its own grid)."""
    h, w = (int(v) for v in x.grids[0]) if hasattr(x, "grids") else model.grid_for(x.shape[-2], x.shape[-1])
    return scores.reshape(scores.shape[0], h, w)  # (B, h*w) -> (B, h, w)


def _forward_attention(model: torch.nn.Module, x: Any) -> list[torch.Tensor]:
    """Every block's attention weights for images or a patch sequence."""
    if hasattr(x, "patches"):
        return model.forward_patch_attention(x.patches, x.mask, x.grids)
    return model.forward_attention(x)


def _tokens(model: torch.nn.Module, x: Any) -> torch.Tensor:
    """The tokens after the final norm for images or an unpadded patch sequence."""
    if hasattr(x, "patches"):
        return model.forward_patch_features(x.patches, x.mask, x.grids)[0]
    return model.forward_features(x)


def _check_discard_ratio(discard_ratio: float) -> None:
    if not 0.0 <= discard_ratio < 1.0:
        raise ConfigError(f"discard_ratio={discard_ratio} is not allowed: expected a fraction in [0, 1).")


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
    tokens = _tokens(model, x)[:, model.num_prefix_tokens:]  # (B, N, C)
    _, weights = model.attn_pool(tokens, return_attn=True)  # (B, heads, 1, N)
    return _to_grid(model, weights.float().mean(dim=1)[:, 0], x)


@torch.inference_mode()
def attention_rollout(model: torch.nn.Module, x: torch.Tensor, *, discard_ratio: float = 0.0) -> torch.Tensor:
    """Attention rollout over all blocks for images (B, C, H, W): a (B, h, w) map over the patch grid.

    ``discard_ratio`` zeroes that fraction of the weakest attention weights per layer (not the
    prefix-token column), which sharpens the map.
    """
    _check_discard_ratio(discard_ratio)
    with eval_mode(model):
        return _rollout_from(model, _forward_attention(model, x), x, discard_ratio)


@torch.inference_mode()
def last_layer_attention(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The pooled query's attention over patches in the last layer, heads averaged: (B, h, w).

    With a class token: its row in the last block. With an attention-pool (MAP) head: the learned
    query's weights. Otherwise (average pooling): the mean attention each patch receives.
    """
    with eval_mode(model):
        return _last_from(model, None if _map_pooled(model) else _forward_attention(model, x), x)


Box = tuple[float, float, float, float]


@torch.inference_mode()
def _heatmaps(net: torch.nn.Module, img: Image.Image, methods: tuple[str, ...],
              discard_ratio: float, max_patches: int | None = None) -> tuple[dict[str, np.ndarray], Box]:
    """Unscaled (h, w) maps of ``img`` for each of ``methods``, from the model's own preprocessing (the pixels
    predict and features give it) and at most one ``forward_attention`` pass; and the box of ``img`` (left, top,
    right, bottom) that the model saw. With ``max_patches`` the image keeps its aspect ratio and the maps are on
    its own patch grid."""
    processor = processor_for(net, max_patches=max_patches)
    x = processor(img).to(next(net.parameters()).device)  # (1, C, H, W), or one image's patch sequence
    if "rollout" in methods:
        _check_discard_ratio(discard_ratio)
    maps = _forward_attention(net, x) if "rollout" in methods or not _map_pooled(net) else None
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


# the annotated figure: the overlay at its own pixel size, a title band above, a colour bar to the right
TITLE_PX, COLORBAR_PX, DPI = 44, 80, 100


def _figure(width_px: int, height_px: int) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _colorbar(fig: Any, rect: list[float], cmap: str) -> None:
    """A vertical colour bar for min-max scaled attention (0: least, 1: most of this image)."""
    import matplotlib
    from matplotlib.cm import ScalarMappable

    cax = fig.add_axes(rect)
    bar = fig.colorbar(ScalarMappable(norm=matplotlib.colors.Normalize(0, 1), cmap=cmap), cax=cax)
    bar.set_ticks([0, 0.5, 1])
    bar.ax.tick_params(labelsize=8)
    bar.set_label("attention (scaled)", fontsize=8)


def annotated(shown: Image.Image, over: Image.Image, *, title: str, cmap: str = "jet") -> Any:
    """One overlay, pixel for pixel, under a title band (model, method, predicted class), with a colour bar."""
    w, h = over.size
    W, H = w + COLORBAR_PX, h + TITLE_PX
    fig = _figure(W, H)
    ax = fig.add_axes([0, 0, w / W, h / H])
    ax.imshow(np.asarray(over), interpolation="nearest", aspect="auto")
    ax.axis("off")
    _colorbar(fig, [(w + 8) / W, 0.08 * h / H, 12 / W, 0.84 * h / H], cmap)
    fig.text(6 / W, 1 - 4 / H, title, ha="left", va="top", fontsize=9)
    return fig


def _panels(image: Image.Image, overlays: dict[str, Image.Image], out: Path, *, title: str,
            cmap: str = "jet") -> None:
    """Original and overlays side by side, titled, with the model and its prediction above and a colour bar."""
    n = 1 + len(overlays)
    aspect = image.height / image.width
    fig = _figure(400 * n + COLORBAR_PX, 400 * aspect + 40 + TITLE_PX)
    W, H = fig.get_size_inches() * DPI
    for i, (name, img) in enumerate([("image", image), *overlays.items()]):
        ax = fig.add_axes([(i * 400 + 6) / W, 4 / H, 388 / W, (H - TITLE_PX - 30) / H])
        ax.imshow(img)
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    _colorbar(fig, [(n * 400 + 8) / W, 0.1, 12 / W, 0.7], cmap)
    fig.text(6 / W, 1 - 4 / H, title, ha="left", va="top", fontsize=9)
    fig.savefig(out, format="png", dpi=DPI)


def _title(net: torch.nn.Module, model: ModelSpec, method: str, img: Image.Image, *, random: bool = False,
           max_patches: int | None = None) -> str:
    """'<model> - <method>' and the predicted class with its probability (or why there is none)."""
    name = name_of(net) if isinstance(model, torch.nn.Module) else net.model_name or str(model)
    name += " (RANDOM weights)" if random else ""
    what = {"rollout": "attention rollout", "last": "last-layer attention", "panels": "attention"}[method]
    if int(getattr(net, "num_classes", 0)) < 1:
        return f"{name} - {what}\nno classifier head: no predicted class"
    processor = processor_for(net, max_patches=max_patches)
    with torch.inference_mode():
        logits = net(processor(img).to(next(net.parameters()).device))  # (1, num_classes)
    prob, index = class_scores(logits, multi_label=is_multi_label(net))[0].max(dim=0)
    label = labels_for_model(net)[int(index)]
    return f"{name} - {what}\npredicted: {label} ({int(index)}), {float(prob):.1%}"


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ConfigError(f"method={method!r} is not supported: expected one of {', '.join(METHODS)}.")


def _with_tokens(net: torch.nn.Module) -> torch.nn.Module:
    """``net``, or a ConfigError for an exported graph (it computes the output only, no attention weights)."""
    if isinstance(net, StandIn):
        raise ConfigError(f"{net.model_name!r} is an exported graph ({net.description}): it gives the model's "
                          f"output only, not its attention; draw attention maps with the model itself (its "
                          f"folder, checkpoint or registry name).")
    return net


def attention_map(image: str | os.PathLike | Image.Image, model: ModelSpec, *, weights: Any = None,
                  method: str = "rollout", discard_ratio: float = 0.0,
                  device: str | torch.device | None = None,
                  max_patches: int | None = None) -> tuple[Image.Image, np.ndarray]:
    """The part of the image the model sees (its own preprocessing: e.g. the centre crop) and the attention map
    (h, w) in [0, 1] over that part, for ``method`` 'rollout' or 'last'. ``max_patches``: the whole image at its
    own aspect ratio, within that many patches, the map on its own patch grid.
    """
    _check_method(method)
    net = _with_tokens(resolve_model(model, weights=weights, device=device))
    img = load_image(image) if not isinstance(image, Image.Image) else image.convert("RGB")
    with borrowed(net, device):
        heats, box = _heatmaps(net, img, (method,), discard_ratio, max_patches)
    return img.crop(tuple(round(v) for v in box)), _min_max(heats[method])


def save_attention_map(image: str | os.PathLike | Image.Image, out: str | os.PathLike, *, model: ModelSpec,
                       weights: Any = None, method: str = "rollout", panels: bool = False, alpha: float = 0.5,
                       discard_ratio: float = 0.0, max_size: int = 1024,
                       device: str | torch.device | None = None, max_patches: int | None = None) -> Path:
    """Write the attention map over the image as a PNG: the overlay with the image's aspect (longest side at
    most ``max_size``), a colour bar, and above it the model's name and predicted class. ``panels=True``
    writes image | rollout | last-layer attention side by side instead. ``max_patches``: as ``attention_map``."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        where = keyword("out", str(out))
        raise OutputError(f"{where} must be a .png file.", hints=(where,))
    if not panels:
        _check_method(method)
    if number_between(0, 1)(alpha) is not None:
        raise ConfigError(f"alpha={alpha!r} is not allowed: expected the map's opacity, a number from 0 to 1.")
    _check_discard_ratio(discard_ratio)
    net = _with_tokens(resolve_model(model, weights=weights, device=device))
    img = load_image(image) if not isinstance(image, Image.Image) else image.convert("RGB")
    with borrowed(net, device):
        heats, box = _heatmaps(net, img, METHODS if panels else (method,), discard_ratio, max_patches)
        random = isinstance(model, str) and weights is None and is_registered(model)
        title = _title(net, model, "panels" if panels else method, img, random=random, max_patches=max_patches)
    shown = img.copy()
    shown.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)  # keeps the aspect
    scale = shown.width / img.width
    box = (box[0] * scale, box[1] * scale, box[2] * scale, box[3] * scale)  # the model's view, in shown pixels
    overlays = {m: overlay(shown, heat, alpha=alpha, box=box) for m, heat in heats.items()}  # each map scaled
    out.parent.mkdir(parents=True, exist_ok=True)
    if panels:
        _panels(shown, {"attention rollout" if k == "rollout" else "last-layer attention": v
                        for k, v in overlays.items()}, out, title=title)
    else:
        annotated(shown, overlays[method], title=title).savefig(out, format="png", dpi=DPI)
    logger.info("wrote %s", out)
    return out
