"""Model names -> architecture and pretrained defaults (preprocessing), as data."""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .checks import did_you_mean_any, did_you_mean_model, registry_style
from .config import IMAGENET_MEAN, IMAGENET_STD, PretrainedCfg, ViTConfig
from .errors import CheckpointError, ConfigError, Hint, UnknownModelError
from .model import FeatureMaps, VisionTransformer
from .weights import build, load_pretrained
from .weights.sources import (
    HUB_PREFIX,
    HubUnavailableError,
    cache_root,
    download_from_hub,
    hub_model,
    looks_like_repo_id,
    not_cached_advice,
)
from .weights.timm import stated_pretrained_cfg
from .zoo_table import ROWS as ZOO_ROWS


@dataclass(frozen=True)
class ModelEntry:
    name: str
    config: dict[str, Any]
    pretrained_cfg: PretrainedCfg
    num_params: int | None = None  # the published count, checked by the tests
    description: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)

    def build_config(self, **overrides: Any) -> ViTConfig:
        return ViTConfig.from_dict({**self.config, **overrides})


_REGISTRY: dict[str, ModelEntry] = {}

# (width, depth, heads) of the sizes in the ViT paper and "How to train your ViT"
SIZES = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16),
         "huge": (1280, 32, 16)}

# Published ViT classifiers: (size, patch, img_size, published parameter count, num_classes)
VIT_VARIANTS = [
    ("tiny", 16, 224, 5_717_416, 1000), ("tiny", 16, 384, 5_790_376, 1000),
    ("small", 32, 224, 22_878_952, 1000), ("small", 32, 384, 22_915_432, 1000),
    ("small", 16, 224, 22_050_664, 1000), ("small", 16, 384, 22_196_584, 1000),
    ("base", 32, 224, 88_224_232, 1000), ("base", 32, 384, 88_297_192, 1000),
    ("base", 16, 224, 86_567_656, 1000), ("base", 16, 384, 86_859_496, 1000),
    ("base", 8, 224, 86_576_872, 1000),
    ("large", 32, 224, 305_510_400, 0), ("large", 32, 384, 306_632_680, 1000),
    ("large", 16, 224, 304_326_632, 1000), ("large", 16, 384, 304_715_752, 1000),
    ("large", 14, 224, 304_203_752, 1000),
    ("huge", 14, 224, 630_764_800, 0),
]

# ImageNet-21k checkpoints of the original paper, with their pre-logits (representation) layer
IN21K_VARIANTS = [("base", 16, 103_186_515), ("base", 32, 104_843_091), ("large", 16, 326_740_307),
                  ("large", 32, 328_949_075), ("huge", 14, 660_385_363)]

# timm's default pretrained tag of each published architecture (timm 1.0's pretrained_cfgs, checked against
# timm by tests/test_habits_hub.py): ``create_model(name, pretrained=True)`` loads hf-hub:timm/<name>.<tag>
DEFAULT_TAG = {"vit": "augreg_in21k_ft_in1k", "deit": "fb_in1k", "dinov2": "lvd142m", "siglip": "v2_webli"}
TAG_EXCEPTIONS = {"vit_base_patch16_224": "augreg2_in21k_ft_in1k", "vit_base_patch8_224": "augreg2_in21k_ft_in1k",
                  "vit_large_patch32_224": "orig_in21k", "vit_huge_patch14_224": "orig_in21k",
                  "vit_large_patch32_384": "orig_in21k_ft_in1k", "vit_large_patch14_224": None}
_TAG = re.compile(r"[A-Za-z0-9_]+")
logger = logging.getLogger(__name__)
ASKED = Hint("pretrained=True", cli="--weights pretrained")
OTHER_WEIGHTS = Hint(" Pass a checkpoint (pretrained='path/to/weights'), or leave pretrained out for random weights.",
                     cli=" Pass a checkpoint with --weights PATH, or leave --weights out for random weights.")
LOCAL_WEIGHTS = Hint(" or pass a local checkpoint as pretrained=PATH",
                     cli=" or pass a local checkpoint as --weights PATH")

DEIT_VARIANTS = [("tiny", 5_717_416, 5_910_800), ("small", 22_050_664, 22_436_432), ("base", 86_567_656, 87_338_192)]


def register(entry: ModelEntry) -> ModelEntry:
    """Add a model name to the registry (used for the built-in table and by users for their own)."""
    ViTConfig(**entry.config)  # validate now, not at first use
    _REGISTRY[entry.name] = entry
    return entry


def _with_default_tags() -> None:
    """Give each entry that timm publishes its default pretrained tag (in its pretrained cfg)."""
    for name, entry in _REGISTRY.items():
        pcfg = entry.pretrained_cfg
        if pcfg.timm_name and pcfg.tag is None:
            tag = TAG_EXCEPTIONS.get(name, DEFAULT_TAG.get(entry.tags[0] if entry.tags else ""))
            _REGISTRY[name] = dataclasses.replace(entry, pretrained_cfg=pcfg.replace(tag=tag))


def split_tag(name: str) -> tuple[str, str | None]:
    """``'vit_tiny_patch16_224.augreg_in21k_ft_in1k'`` -> (architecture, tag); a name without a tag -> (name, None)."""
    arch, dot, tag = name.partition(".")
    if dot and arch in _REGISTRY and _TAG.fullmatch(tag):
        return arch, tag
    return name, None


def _populate() -> None:
    for size, patch, img, count, num_classes in VIT_VARIANTS:
        dim, depth, heads = SIZES[size]
        name = f"vit_{size}_patch{patch}_{img}"
        register(ModelEntry(
            name=name,
            config=dict(img_size=img, patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads,
                        num_classes=num_classes),
            pretrained_cfg=PretrainedCfg(input_size=(3, img, img), crop_pct=1.0 if img == 384 else 0.9,
                                         num_classes=num_classes,
                                         label_names="imagenet-1k" if num_classes == 1000 else None,
                                         hf_hub_id=(f"google/vit-{size}-patch{patch}-{img}"
                                                    if size in ("base", "large") and patch in (16, 32) else None),
                                         timm_name=name),
            num_params=count, description=f"ViT-{size[0].upper()}/{patch} at {img}px", tags=("vit",)))
    for size, patch, count in IN21K_VARIANTS:
        dim, depth, heads = SIZES[size]
        register(ModelEntry(
            name=f"vit_{size}_patch{patch}_224_in21k",
            config=dict(patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads, num_classes=21843,
                        representation_size=dim),
            pretrained_cfg=PretrainedCfg(num_classes=21843, label_names=None,
                                         hf_hub_id=f"google/vit-{size}-patch{patch}-224-in21k"),
            num_params=count, description=f"ViT-{size[0].upper()}/{patch} ImageNet-21k with its pre-logits layer",
            tags=("vit",)))
    for size, count, count_distilled in DEIT_VARIANTS:
        dim, depth, heads = SIZES[size]
        for distilled, n in ((False, count), (True, count_distilled)):
            name = f"deit_{size}_{'distilled_' if distilled else ''}patch16_224"
            register(ModelEntry(
                name=name,
                config=dict(embed_dim=dim, depth=depth, num_heads=heads, distilled=distilled),
                # DeiT's evaluation: resize to 256, centre crop 224 (crop_pct 0.875), as its HF processor does
                pretrained_cfg=PretrainedCfg(mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_pct=0.875,
                                             hf_hub_id=f"facebook/{name.replace('_', '-')}", timm_name=name),
                num_params=n, description=f"DeiT-{size[0].upper()}{' distilled' if distilled else ''}",
                tags=("deit",)))
    for img, count in ((224, 92_884_224), (256, 92_930_304), (384, 93_176_064)):
        name = f"vit_base_patch16_siglip_{img}"
        register(ModelEntry(
            name=name,
            config=dict(img_size=img, class_token=False, global_pool="map", act_layer="gelu_tanh",
                        num_classes=0),
            # SigLIP's own preprocessing resizes the whole image to the input size (no crop)
            pretrained_cfg=PretrainedCfg(input_size=(3, img, img), crop_pct=1.0, crop_mode="squash", num_classes=0,
                                         label_names=None, hf_hub_id=f"google/siglip-base-patch16-{img}",
                                         timm_name=name),
            num_params=count, description="SigLIP ViT-B/16 image tower (attention-pool head)", tags=("siglip",)))
    register(ModelEntry(
        name="vit_so400m_patch14_siglip_224",
        config=dict(patch_size=14, embed_dim=1152, depth=27, num_heads=16, mlp_ratio=3.7362, class_token=False,
                    global_pool="map", act_layer="gelu_tanh", num_classes=0),
        pretrained_cfg=PretrainedCfg(crop_pct=1.0, crop_mode="squash", num_classes=0, label_names=None,
                                     hf_hub_id="google/siglip-so400m-patch14-224",
                                     timm_name="vit_so400m_patch14_siglip_224"),
        num_params=427_680_704, description="SigLIP So400m/14 image tower", tags=("siglip",)))
    dinov2_counts = {("small", 0): 22_056_192, ("small", 4): 22_057_344, ("base", 0): 86_579_712,
                     ("base", 4): 86_582_016}
    for size in ("small", "base"):
        dim, depth, heads = SIZES[size]
        for reg in (0, 4):
            name = f"vit_{size}_patch14_{'reg4_' if reg else ''}dinov2"
            register(ModelEntry(
                name=name,
                config=dict(img_size=518, patch_size=14, embed_dim=dim, depth=depth, num_heads=heads,
                            init_values=1e-5, reg_tokens=reg, no_embed_class=bool(reg), num_classes=0),
                pretrained_cfg=PretrainedCfg(input_size=(3, 518, 518), mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                             crop_pct=1.0, num_classes=0, label_names=None, timm_name=name),
                num_params=dinov2_counts[size, reg],
                description=f"DINOv2 ViT-{size[0].upper()}/14{' with 4 registers' if reg else ''}",
                tags=("dinov2",)))
    # A small ViT for the bundled digits data set (8x8 digits upscaled to 32x32), tuned for `vitkit train`
    # on a 2-core CPU: 8x8-pixel patches (16 tokens) make a 6-block model cheaper than 4 blocks on 4x4
    # patches (64 tokens), and it ends at 98.9-100% held-out top-1 after 70 epochs (~1.3 s each, one thread).
    register(ModelEntry(
        name="vit_digits",
        config=dict(img_size=32, patch_size=8, in_chans=3, embed_dim=96, depth=6, num_heads=3, mlp_ratio=2.0,
                    num_classes=10, global_pool="avg"),
        pretrained_cfg=PretrainedCfg(input_size=(3, 32, 32), crop_pct=1.0, interpolation="bilinear",
                                     num_classes=10, label_names="digits"),
        description="a small ViT for 32x32 images (the bundled digits data)", tags=("small",)))


FAMILY_SOURCES = {
    "dinov3": "DINOv3 (Meta; timm's eva.py port)", "eva02": "EVA-02 (BAAI)", "pe": "Perception Encoder (Meta)",
    "clip": "CLIP image tower (OpenAI / LAION / DataComp)", "aimv2": "AIMv2 (Apple)", "dinov2": "DINOv2 (Meta)",
    "flexivit": "FlexiViT (Google)", "siglip": "SigLIP / SigLIP 2 image tower (Google)",
}


def _populate_families() -> None:
    """Today's families, read off timm's definitions (zoo_table.py, written by scripts/gen_zoo.py)."""
    for name, family, count, config, pcfg in ZOO_ROWS:
        register(ModelEntry(name=name, config=config, pretrained_cfg=PretrainedCfg.from_dict(pcfg), num_params=count,
                            description=FAMILY_SOURCES[family], tags=(family,)))


# timm's naflexvit_* models: (name, ViTConfig fields, patch budget, tag, published) at 16x16 learned positions;
# their published parameter counts (timm 1.0.31, default heads)
NAFLEX_PARAMS = {"naflexvit_base_patch16_gap": 86_633_704, "naflexvit_base_patch16_map": 93_718_504,
                 "naflexvit_so150m2_patch16_reg1_gap": 136_058_728, "naflexvit_so150m2_patch16_reg1_map": 142_457_320,
                 "naflexvit_base_patch16_siglip": 92_930_304, "naflexvit_so400m_patch16_siglip": 427_888_064}
_NAFLEX_BASE = dict(img_size=256, patch_size=16, class_token=False, no_embed_class=True)
_NAFLEX_SO150M = dict(embed_dim=832, depth=21, num_heads=13, mlp_ratio=34 / 13, qkv_bias=False, reg_tokens=1,
                      init_values=1e-5)
_SIGLIP2 = dict(act_layer="gelu_tanh", global_pool="map", posemb_resample="siglip2", num_classes=0)
NAFLEX = [
    ("naflexvit_base_patch16_gap", dict(init_values=1e-5, global_pool="avg", reg_tokens=4, fc_norm=True), 576,
     "e300_s576_in1k", True),
    ("naflexvit_base_patch16_map", dict(init_values=1e-5, global_pool="map", reg_tokens=1), 576, "untrained", False),
    ("naflexvit_so150m2_patch16_reg1_gap", dict(_NAFLEX_SO150M, global_pool="avg", fc_norm=True), 576, "untrained",
     False),
    ("naflexvit_so150m2_patch16_reg1_map", dict(_NAFLEX_SO150M, global_pool="map"), 576, "untrained", False),
    ("naflexvit_base_patch16_siglip", dict(_SIGLIP2), 256, "v2_webli", True),
    ("naflexvit_so400m_patch16_siglip", dict(_SIGLIP2, embed_dim=1152, depth=27, num_heads=16, mlp_ratio=3.7362),
     256, "v2_webli", True),
]


def _populate_naflex() -> None:
    """Native-aspect (NaFlex) ViTs: each image at its own aspect ratio within a patch budget (vitkit.patches)."""
    for name, fields, budget, tag, published in NAFLEX:
        config = {**_NAFLEX_BASE, "posemb_resample": "timm", **fields}
        pcfg = PretrainedCfg(input_size=(3, 384, 384), crop_pct=1.0, num_classes=config.get("num_classes", 1000),
                             label_names="imagenet-1k" if config.get("num_classes", 1000) else None,
                             timm_name=name if published else None, tag=tag if published else None,
                             max_num_patches=budget)
        register(ModelEntry(name=name, config=config, pretrained_cfg=pcfg, tags=("naflex",),
                            num_params=NAFLEX_PARAMS[name],
                            description=f"NaFlex ViT (timm; SigLIP 2 NaFlex for the siglip ones): {name}"))


def _matcher(patterns: str | Sequence[str]) -> Callable[[str], bool]:
    """A test of a name against shell-style patterns, a plain word matching anywhere (``'deit'``)."""
    words = [patterns] if isinstance(patterns, str) else list(patterns)
    words = [w if any(ch in w for ch in "*?[") else f"*{w}*" for w in words if w]
    return lambda name: any(fnmatch.fnmatch(name, w) for w in words)


def has_published_weights(name: str) -> bool:
    """Whether ``pretrained=True`` has weights to fetch for ``name`` (a timm tag or a hub repository)."""
    pcfg = get_entry(name).pretrained_cfg
    return bool((pcfg.timm_name and pcfg.tag) or pcfg.hf_hub_id)


def list_models(filter: str | Sequence[str] = "*", *, pretrained: bool = False,
                exclude_filters: str | Sequence[str] = "", include_tags: bool | None = None) -> list[str]:
    """Registered model names matching ``filter``, sorted, as timm's ``list_models`` answers.

    ``filter``: a shell-style pattern (``'vit_base_*'``), a plain word matched anywhere (``'deit'``), or a list
    of them. ``pretrained=True``: only names with published weights; ``exclude_filters``: patterns to leave out;
    ``include_tags`` (default: as ``pretrained``): names with their default tag, ``name.tag``, as timm does.
    """
    keep, drop = _matcher(filter or "*"), _matcher(exclude_filters)
    names = sorted(n for n in _REGISTRY if keep(n) and not drop(n) and (not pretrained or has_published_weights(n)))
    if include_tags if include_tags is not None else pretrained:
        tags = {n: _REGISTRY[n].pretrained_cfg.tag for n in names}
        names = [f"{n}.{tags[n]}" if tags[n] else n for n in names]
    return names


def get_entry(name: str) -> ModelEntry:
    """The registry entry of ``name`` (a timm pretrained tag, ``name.tag``, is kept in its pretrained cfg);
    an unknown name fails with the closest known names."""
    arch, tag = split_tag(name)
    try:
        entry = _REGISTRY[arch]
    except KeyError:
        raise UnknownModelError(
            f"{_unknown(name)}{did_you_mean_model(name, _REGISTRY)} "
            "See vitkit.list_models() or `vitkit models` for all names.") from None
    if tag is None:
        return entry
    return dataclasses.replace(entry, pretrained_cfg=entry.pretrained_cfg.replace(tag=tag))


def _unknown(name: str) -> str:
    """What an unknown name is not; a name of the form ORG/NAME (other than a paper-style 'ViT-B/16') is no
    cached Hub repository either, and the sentence says how to get it."""
    if not looks_like_repo_id(name) or registry_style(name) != name.strip().lower():
        return f"Unknown model {name!r}."
    return (f"{name!r} is neither a registered model name nor a local path, and the Hugging Face cache "
            f"({cache_root()}) holds no repository {name!r}. {not_cached_advice(name)}")


def pretrained_source(name: str) -> str:
    """The ``hf-hub:`` id of a registered model's published weights: timm's ``timm/<name>.<tag>`` where timm
    publishes them, else the Google/Hugging Face repository in its pretrained cfg."""
    return _source_of(name, get_entry(name).pretrained_cfg)


def _source_of(name: str, pcfg: PretrainedCfg) -> str:
    if pcfg.hf_hub_id and pcfg.hf_hub_id.startswith("timm/"):  # a timm name whose weights another name publishes
        return f"hf-hub:{pcfg.hf_hub_id}"
    if pcfg.timm_name and pcfg.tag:
        return f"hf-hub:timm/{pcfg.timm_name}.{pcfg.tag}"
    if pcfg.hf_hub_id:
        return f"hf-hub:{pcfg.hf_hub_id}"
    raise CheckpointError(f"Model {name!r} has no published weights, so {ASKED.text} cannot load any."
                          f"{OTHER_WEIGHTS.text}", hints=(ASKED, OTHER_WEIGHTS))


def _fetch_published(name: str, pcfg: PretrainedCfg) -> str:
    """A local folder with the published weights ``pcfg`` names (those of the model ``name``): the Hugging Face
    cache (offline too), else a download."""
    repo = _source_of(name, pcfg).removeprefix(HUB_PREFIX)
    try:
        return str(download_from_hub(repo))
    except HubUnavailableError:  # a damaged cache entry is reported as damaged
        raise CheckpointError(
            f"The published weights of {name!r} ({repo}) are not in the Hugging Face cache and cannot be "
            f"downloaded here (offline or no network). Fetch them once where there is network with "
            f"`hf download {repo}` and share that cache (HF_HUB_CACHE or HF_HOME),{LOCAL_WEIGHTS.text}.",
            hints=(LOCAL_WEIGHTS,)) from None


# timm's pretrained_cfg_overlay keys: where the weights are, and the preprocessing fields vitkit keeps
OVERLAY_SOURCES = ("file", "hf_hub_id", "url")
OVERLAY_KEYS = (*OVERLAY_SOURCES, *(f.name for f in dataclasses.fields(PretrainedCfg) if f.name != "hf_hub_id"))


def create_model(
    name: str,
    *,
    pretrained: Any = None,
    num_classes: int | None = None,
    img_size: int | tuple[int, int] | None = None,
    device: str | torch.device | None = None,
    checkpoint_path: str | os.PathLike[str] | None = None,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    strict: bool = True,
    format: str | None = None,  # noqa: A002 (the weight format, as from_pretrained names it)
    allow_nonfinite: bool = False,
    **overrides: Any,
) -> torch.nn.Module:
    """Build a registered model by name, as timm's ``create_model`` does.

    ``pretrained``: True for the published weights (through the Hugging Face cache: works offline once
    cached), or a weight source (file, folder, ``hf-hub:`` id, ...) loaded into the model; a head of a
    different class count is replaced by a fresh one and reported. ``name`` may carry a timm pretrained
    tag (``'vit_tiny_patch16_224.augreg_in21k_ft_in1k'``), kept in ``model.pretrained_cfg.tag``, or be a timm
    model repository, ``'hf-hub:timm/NAME'``: its config.json names the architecture, class count and
    preprocessing, and ``pretrained=True`` loads its weights.
    ``pretrained_cfg_overlay``: timm's overlay of the pretrained cfg: ``file`` (a local weight file that
    ``pretrained=True`` loads instead of the published weights), ``hf_hub_id`` (another repository) and
    preprocessing fields (mean, std, crop_pct, ...). ``checkpoint_path``: weights of exactly this architecture
    (e.g. your fine-tuned model) loaded after it is built, without head replacement or resampling.
    ``strict=False`` loads the tensors of the weights that fit and initialises the rest; ``format`` names their
    checkpoint family ('vitkit', 'timm', 'hf', 'npz') when detection cannot tell; ``allow_nonfinite=True``
    loads NaN/Inf weights.
    ``num_classes`` and ``img_size`` override the registry's architecture, as do other ``ViTConfig``
    fields in ``overrides``. ``features_only=True`` (with ``out_indices``) returns a ``FeatureMaps``
    module giving NCHW maps of chosen blocks, as timm's ``features_only`` does for CNNs.
    ``dynamic_img_size=True`` (timm's flag) is what every vitkit model does anyway: any input whose sides are
    multiples of the patch size runs, its position embeddings resampled to the input's grid at each forward.
    ``device='meta'`` builds without allocating memory.
    """
    features_only, out_indices = overrides.pop("features_only", False), overrides.pop("out_indices", 3)
    _check_dynamic_img_size(overrides.pop("dynamic_img_size", True))
    load = dict(strict=strict, format=format, allow_nonfinite=allow_nonfinite)
    overlay = _checked_overlay(pretrained_cfg_overlay)
    if name.startswith(HUB_PREFIX):
        entry, pretrained, num_classes = _hub_entry(name, pretrained, num_classes, overrides)
    else:
        entry = get_entry(name)
    if overlay:
        entry, pretrained = _overlaid(entry, overlay, pretrained)
    adapt = True
    if checkpoint_path is not None:  # timm loads it last, over any pretrained weights: it is what stays
        pretrained, adapt = os.fspath(checkpoint_path), False
    model = _create(entry, pretrained, num_classes=num_classes, img_size=img_size, device=device, load=load,
                    adapt=adapt, **overrides)
    return FeatureMaps(model, out_indices) if features_only else model


def _check_dynamic_img_size(value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"dynamic_img_size={value!r} is not allowed: expected True or False (vitkit models take "
                          "any input size that is a multiple of the patch size either way).")


def _checked_overlay(overlay: dict[str, Any] | None) -> dict[str, Any]:
    if overlay is None:
        return {}
    if not isinstance(overlay, dict):
        raise ConfigError(f"pretrained_cfg_overlay={overlay!r} is not allowed: expected a dict, e.g. "
                          "dict(file='path/to/weights.safetensors').")
    unknown = [k for k in overlay if k not in OVERLAY_KEYS]
    if unknown:
        raise ConfigError(f"pretrained_cfg_overlay has unknown key(s) {', '.join(map(repr, unknown))}."
                          f"{did_you_mean_any(unknown[0], OVERLAY_KEYS)} Known: {', '.join(OVERLAY_KEYS)}.")
    if overlay.get("url") is not None:
        raise ConfigError(f"pretrained_cfg_overlay url={overlay['url']!r}: vitkit does not download from URLs. "
                          "Download the file yourself and pass pretrained_cfg_overlay=dict(file=PATH).")
    return dict(overlay)


def _overlaid(entry: ModelEntry, overlay: dict[str, Any], pretrained: Any) -> tuple[ModelEntry, Any]:
    """The entry with the overlay's preprocessing, and the weights ``pretrained=True`` then loads."""
    fields = {k: v for k, v in overlay.items() if k not in OVERLAY_SOURCES}
    if overlay.get("hf_hub_id"):
        fields.update(hf_hub_id=overlay["hf_hub_id"], tag=None)
    entry = dataclasses.replace(entry, pretrained_cfg=entry.pretrained_cfg.replace(**fields)) if fields else entry
    if overlay.get("file") is not None:
        if pretrained is True:
            return entry, os.fspath(overlay["file"])
        logger.warning("pretrained_cfg_overlay file=%r is loaded only with pretrained=True (as in timm); building "
                       "%s with random weights", overlay["file"], entry.name)
    return entry, pretrained


def _hub_entry(name: str, pretrained: Any, num_classes: int | None,
               overrides: dict[str, Any]) -> tuple[ModelEntry, Any, int | None]:
    """A timm model repository (``hf-hub:timm/NAME``) as a registry entry: the architecture its config.json
    names, with its class count, model arguments (added to ``overrides``) and preprocessing; and the weights
    ``pretrained=True`` means (its folder)."""
    repo = name[len(HUB_PREFIX):]
    folder, config = hub_model(repo, weights=pretrained is True)
    arch = config.get("architecture")
    if not isinstance(arch, str):
        raise ConfigError(f"{name} is not a timm model repository: its config.json names no 'architecture'. Load it "
                          f"as it describes itself with vitkit.from_pretrained({name!r}).")
    if not is_registered(arch):
        raise UnknownModelError(f"{name}: its config.json names the architecture {arch!r}, which vitkit does not "
                                f"have.{did_you_mean_model(arch, _REGISTRY)} See vitkit.list_models().")
    entry = get_entry(arch)
    fields = ViTConfig.__dataclass_fields__
    for key, value in (config.get("model_args") or {}).items():
        if key in fields:
            overrides.setdefault(key, value)
    stated = stated_pretrained_cfg(config) or {}
    hub_classes = config.get("num_classes")
    if isinstance(hub_classes, int) and not isinstance(hub_classes, bool):
        stated["num_classes"] = hub_classes
        num_classes = hub_classes if num_classes is None else num_classes
        if "label_names" not in stated and hub_classes != entry.pretrained_cfg.num_classes:
            stated["label_names"] = None  # the registry's label set describes another head
    stated.setdefault("tag", split_tag(repo.rpartition("/")[2])[1])
    pcfg = entry.pretrained_cfg.replace(**stated, hf_hub_id=repo)
    return dataclasses.replace(entry, pretrained_cfg=pcfg), str(folder) if pretrained is True else pretrained, \
        num_classes


def _create(entry: ModelEntry, pretrained: Any, *, num_classes: int | None, img_size: int | tuple[int, int] | None,
            device: str | torch.device | None, load: dict[str, Any], adapt: bool = True,
            **overrides: Any) -> VisionTransformer:
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    if img_size is not None:
        overrides["img_size"] = img_size
    config = entry.build_config(**overrides)
    pcfg = entry.pretrained_cfg
    # the label set only describes the head it was published with
    labels = pcfg.label_names if config.num_classes == pcfg.num_classes else None
    pcfg = pcfg.replace(input_size=(config.in_chans, *config.img_size), num_classes=config.num_classes,
                        label_names=labels)
    if pretrained is True:
        pretrained = _fetch_published(entry.name if pcfg.tag is None else f"{entry.name}.{pcfg.tag}", pcfg)
    if pretrained is not None and pretrained is not False:
        return load_pretrained(pretrained, config=config, pretrained_cfg=pcfg, device=device,
                               model_name=entry.name, explicit=tuple(overrides), adapt=adapt, **load)
    return build(config, pretrained_cfg=pcfg, model_name=entry.name, device=device)


def is_registered(name: str) -> bool:
    """Whether ``name`` (with or without a timm pretrained tag) is a registered model."""
    return split_tag(name)[0] in _REGISTRY


def known_configs() -> dict[str, ViTConfig]:
    """Every registered architecture by name: what the weights floor may know of the registry (it is passed
    down as an argument, since weights sit below the registry)."""
    return {name: entry.build_config() for name, entry in _REGISTRY.items()}


_populate()
_populate_families()
_populate_naflex()
_with_default_tags()
