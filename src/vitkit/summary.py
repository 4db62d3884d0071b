"""A model's structure with each module's output shape, parameter counts and MACs (``vitkit inspect``).

The model runs once on the ``meta`` device (shapes only, no memory, no arithmetic), with forward hooks
recording output shapes and counting multiply-accumulates analytically. MACs follow fvcore's rules,
which timm's published figures use: one per multiply-add of every linear layer, convolution and
attention matmul (Q @ K^T and attn @ V), plus 5 per element for an affine LayerNorm (4 without affine), and
for rotary embeddings 2 per element of q and of k of the patch tokens (x * cos and rotate(x) * sin).
Activations, softmax, additions and pooling are not counted. FLOPs are reported as 2 x MACs.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .errors import ConfigError
from .layers import Attention, AttentionPoolHead
from .model import name_of
from .registry import create_model, is_registered
from .rope import rope_macs
from .runtime import ModelSpec, resolve_model

DisplayShape = list[int | str]


@dataclass
class ModuleInfo:
    """One module: its output shape (for one call) and its parameters and MACs, children included."""

    name: str
    type: str
    depth: int
    output_shape: DisplayShape | None
    params: int
    trainable: int
    macs: int


@dataclass
class ModelSummary:
    model_name: str
    input_shape: DisplayShape
    modules: list[ModuleInfo]
    path: list[tuple[str, DisplayShape]]
    stages: list[tuple[str, int, int]]  # (stage, params, MACs)
    total_params: int
    trainable_params: int
    macs: int  # per batch of ``batch`` images (1 when the batch is symbolic)
    description: str = ""
    notes: list[str] = field(default_factory=list)
    rotary: bool = False  # the MACs include rotating q and k

    @property
    def frozen_params(self) -> int:
        return self.total_params - self.trainable_params

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(frozen_params=self.frozen_params, flops=self.flops,
                    path=[{"step": s, "shape": shape} for s, shape in self.path],
                    stages=[{"stage": s, "params": p, "macs": m} for s, p, m in self.stages])
        return data

    def to_text(self, max_depth: int = 3) -> str:
        return format_summary(self, max_depth=max_depth)


# ---------------------------------------------------------------------------------------------- counting
def _module_macs(module: nn.Module, inputs: tuple, output: Any) -> int:
    """MACs of one call of ``module`` excluding its children (fvcore's conventions)."""
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    if isinstance(module, nn.Conv2d):
        return output.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
        return inputs[0].numel() * (5 if module.elementwise_affine else 4)
    if isinstance(module, Attention):
        B, N, C = inputs[0].shape
        macs = 2 * B * N * N * C  # Q @ K^T and attn @ V: B x heads x N x N x head_dim each
        if len(inputs) > 1 and inputs[1] is not None:  # rotary embeddings: q and k of the patch tokens rotated
            macs += B * rope_macs(N - module.num_prefix_tokens, module.num_heads * module.head_dim)
        return macs
    if isinstance(module, AttentionPoolHead):
        B, N, C = inputs[0].shape
        return 2 * B * N * C  # one latent query against N keys, then the weighted sum of N values
    return 0


def _first_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def _trace(model: nn.Module, x: torch.Tensor) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Run ``model`` on ``x`` recording each module's last output shape and its own MACs."""
    shapes: dict[str, list[int]] = {}
    own_macs: dict[str, int] = {}
    handles = []
    for name, module in model.named_modules():
        def hook(mod: nn.Module, inputs: tuple, output: Any, name: str = name) -> None:
            tensor = _first_tensor(output)
            if tensor is not None:
                shapes[name] = list(tensor.shape)
            own_macs[name] = own_macs.get(name, 0) + _module_macs(mod, inputs, tensor if tensor is not None else output)
        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return shapes, own_macs


def _inside(name: str, prefix: str) -> bool:
    return not prefix or name == prefix or name.startswith(prefix + ".")


def _param_counts(named_params: Sequence[tuple[str, nn.Parameter]], prefix: str) -> tuple[int, int]:
    """(total, trainable) parameter counts of the module ``prefix`` from the model's named parameters."""
    params = [p for n, p in named_params if _inside(n, prefix)]
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


# ---------------------------------------------------------------------------------------------- building
def meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model``'s structure on the meta device: no weight is copied (the caller's model and its
    memory are untouched; parameters keep their ``requires_grad``)."""
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)


def summarize(model: ModelSpec, *, img_size: int | tuple[int, int] | None = None, batch_size: int | None = None,
              weights: Any = None) -> ModelSummary:
    """Structure, output shapes, parameters and MACs of ``model`` (a registry name, saved model or object).

    ``img_size`` changes the input (for a registry name, the model is built for it). Shapes show the
    batch as 'B' unless ``batch_size`` is given; MACs are per image unless ``batch_size`` is given.
    """
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} is not allowed: expected a positive integer (or None).")
    if isinstance(model, nn.Module):
        net = meta_copy(model)
    elif weights is None and is_registered(str(model)):  # build without memory or initialisation
        net = create_model(str(model), img_size=img_size, device="meta")
    else:  # loads the weights (for their architecture), then drops them
        net = resolve_model(model, weights=weights, img_size=img_size).to("meta")
    net.eval()
    config = net.config
    size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size or config.img_size)
    B = batch_size or 1
    x = torch.empty(B, config.in_chans, *size, device="meta")
    shapes, own_macs = _trace(net, x)
    show = (lambda s: s) if batch_size else (lambda s: ["B", *s[1:]])
    modules = []
    named_params = list(net.named_parameters())
    for name, module in net.named_modules():
        total, trainable = _param_counts(named_params, name)
        macs = sum(m for n, m in own_macs.items() if _inside(n, name))
        depth = name.count(".") + 1 if name else 0
        modules.append(ModuleInfo(name=name or "(model)", type=type(module).__name__, depth=depth,
                                  output_shape=show(shapes[name]) if name in shapes else None,
                                  params=total, trainable=trainable, macs=macs))
    root = modules[0]
    return ModelSummary(model_name=name_of(net), input_shape=show(list(x.shape)),
                        modules=modules, path=[(s, show(shape)) for s, shape in _data_path(net, shapes, list(x.shape))],
                        stages=_stages(net, own_macs), total_params=root.params, trainable_params=root.trainable,
                        macs=root.macs, description=_describe(net, size), rotary=config.rope != "none")


def _describe(net: nn.Module, size: Sequence[int]) -> str:
    c = net.config
    names = [n for n, on in (("a class token", c.class_token), ("a distillation token", c.distilled),
                             (f"{c.reg_tokens} register token{'s' * (c.reg_tokens != 1)}", c.reg_tokens)) if on]
    prefix = "prefix: " + " + ".join(names) if names else "no prefix tokens"
    return (f"{type(net).__name__}: {size[0]}x{size[1]} input, patch {c.patch_size[0]}x{c.patch_size[1]}, "
            f"width {c.embed_dim}, {c.depth} blocks x {c.num_heads} heads, {prefix}, "
            f"pooling '{c.global_pool}', {c.num_classes} classes")


def _data_path(net: nn.Module, shapes: dict[str, list[int]], input_shape: list[int]) -> list[tuple[str, list[int]]]:
    """The steps an image takes through the model, with the tensor shape after each."""
    c = net.config
    B, D = input_shape[0], c.embed_dim
    grid = shapes["patch_embed"][2:]
    tokens = [B, grid[0] * grid[1] + net.num_prefix_tokens, D]
    prefix_names = [n for n, on in (("class token", c.class_token), ("distillation token", c.distilled),
                                    ("register tokens", c.reg_tokens)) if on]
    if prefix_names:
        pos = ("add pos_embed to patches, prepend " if c.no_embed_class else "prepend ") + ", ".join(prefix_names)
        pos += "" if c.no_embed_class else ", add pos_embed"
    else:  # nothing to prepend (SigLIP-style MAP models)
        pos = "add pos_embed to patches"
    ph, pw = c.patch_size
    path = [("input image", input_shape),
            (f"patch_embed: conv {ph}x{pw}, stride {ph}", shapes["patch_embed"]),
            ("flatten patches to tokens", [B, grid[0] * grid[1], D]),
            (pos, tokens),
            (f"blocks.0 .. blocks.{c.depth - 1}: {c.depth} x (attention + MLP)", shapes[f"blocks.{c.depth - 1}"])]
    if "norm" in shapes and not isinstance(net.norm, nn.Identity):
        path.append(("norm", shapes["norm"]))
    if net.head_dist is not None:
        path.append(("take class and distillation tokens", [B, 2, D]))
    elif net.attn_pool is not None:
        path.append(("attn_pool: attention pooling (MAP)", shapes["attn_pool"]))
    elif c.global_pool in ("token", "avg"):
        path.append(("pool: class token" if c.global_pool == "token" else "pool: mean of patch tokens", [B, D]))
    elif c.global_pool == "token_avg":
        path.append(("pool: class token and mean of patch tokens, side by side", [B, 2 * D]))
    for name in ("fc_norm", "pre_logits"):
        if not isinstance(getattr(net, name), nn.Identity) and name in shapes:
            path.append((name, shapes[name]))
    if not isinstance(net.head, nn.Identity):
        label = "head and head_dist, averaged" if net.head_dist is not None else "head: linear classifier"
        path.append((label, shapes["head"]))
    return path


def _stages(net: nn.Module, own_macs: dict[str, int]) -> list[tuple[str, int, int]]:
    """Parameters and MACs per stage: patch embedding, tokens, each block, final norm, head."""
    top = {name for name, _ in net.named_children()}
    head_parts = [n for n in ("fc_norm", "attn_pool", "pre_logits", "head", "head_dist") if n in top]
    groups: list[tuple[str, list[str]]] = [("patch_embed", ["patch_embed"]),
                                           ("tokens (cls/dist/reg, pos_embed)", ["cls_token", "dist_token",
                                                                                 "reg_token", "pos_embed"])]
    groups += [(f"blocks.{i}", [f"blocks.{i}"]) for i in range(len(net.blocks))]
    groups += [("norm", ["norm_pre", "norm"]), ("head (" + ", ".join(head_parts) + ")", head_parts)]
    rows = []
    for label, prefixes in groups:
        params = sum(p.numel() for n, p in net.named_parameters() if any(_inside(n, pre) for pre in prefixes))
        macs = sum(m for n, m in own_macs.items() if n and any(_inside(n, pre) for pre in prefixes))
        rows.append((label, params, macs))
    return rows


# ---------------------------------------------------------------------------------------------- text
def human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23M' (K, M, G, T)."""
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= factor:
            return f"{n / factor:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def _shape(shape: DisplayShape | None) -> str:
    return "(" + ", ".join(map(str, shape)) + ")" if shape is not None else "-"


def _visible(info: ModuleInfo, max_depth: int) -> bool:
    """Modules to list: down to ``max_depth``, no no-op layers; inside the blocks only the first is expanded."""
    parts = info.name.split(".")
    if info.depth > max_depth or info.type in ("Identity", "Dropout", "DropPath"):
        return False
    return not (len(parts) > 2 and parts[0] == "blocks" and parts[1] != "0")


def _collapse_blocks(stages: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """Runs of identical block rows as one row: 'blocks.0 .. blocks.11 (12 x, each)'."""
    out: list[tuple[str, int, int]] = []
    run: list[tuple[str, int, int]] = []
    for row in stages + [("", -1, -1)]:
        if run and (not row[0].startswith("blocks.") or row[1:] != run[0][1:]):
            label = run[0][0] if len(run) == 1 else f"{run[0][0]} .. {run[-1][0]} ({len(run)} x, each)"
            out.append((label, *run[0][1:]))
            run = []
        if row[0].startswith("blocks."):
            run.append(row)
        elif row[0]:
            out.append(row)
    return out


def format_summary(s: ModelSummary, max_depth: int = 3) -> str:
    """The summary as text: the data path, the module tree, stages and totals."""
    lines = [f"{s.model_name}: {s.description}", "", "Data path"]
    width = max(len(step) for step, _ in s.path) + 2
    lines += [f"  {step:<{width}}{_shape(shape)}" for step, shape in s.path]
    lines += ["", f"{'Module':<36}{'Type':<20}{'Output shape':<22}{'Params':>10}{'Trainable':>11}{'MACs':>10}"]
    for m in s.modules:
        if not _visible(m, max_depth):
            continue
        label = "  " * max(m.depth - 1, 0) + m.name
        lines.append(f"{label[:35]:<36}{m.type[:19]:<20}{_shape(m.output_shape):<22}{human(m.params):>10}"
                     f"{human(m.trainable):>11}{human(m.macs):>10}")
    lines += ["", f"{'Stage':<48}{'Params':>12}{'MACs':>12}"]
    lines += [f"{label[:47]:<48}{human(p):>12}{human(m):>12}" for label, p, m in _collapse_blocks(s.stages)]
    per = "per image" if s.input_shape[0] == "B" else f"for a batch of {s.input_shape[0]}"
    lines += ["", f"Parameters: {s.total_params:,} ({human(s.total_params)}); trainable {s.trainable_params:,}, "
                  f"frozen {s.frozen_params:,}",
              f"MACs: {s.macs:,} ({human(s.macs)}) {per}; FLOPs ~ {human(s.flops)} (2 x MACs)",
              "MACs count linear, conv and attention matmuls plus LayerNorm (5/element), as fvcore and timm do"
              + ("; rotary embeddings: 2/element of q and of k of the patch tokens." if s.rotary else ".")]
    return "\n".join(lines)
