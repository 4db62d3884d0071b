"""LoRA: low-rank adapters on a VisionTransformer's attention and MLP linears (Hu et al. 2021).

A target linear ``y = W x + b`` becomes ``y = W x + b + (alpha / rank) * B A dropout(x)`` with ``A``
(rank, in) and ``B`` (out, rank); ``B`` starts at zero, so an adapted model first computes exactly what
the base model did. Only the adapters and the classifier head(s) train.

Targets are the linears of every block: ``qkv`` (the fused query/key/value projection), ``proj``
(attention output), ``fc1`` and ``fc2`` (MLP). vitkit's attention is fused, as timm's is: LoRA on
``qkv`` adapts the whole (3*dim, dim) projection with one ``A`` shared by q, k and v and one ``B`` of
3*dim rows. PEFT on transformers' ViT targets ``query`` and ``value`` separately (peft #691 is the
fused-qkv case). PEFT's pair of rank-r adapters on q and v is a rank-2r update of the stacked
projection (separate input subspaces, zero k rows); a fused rank-r adapter has the same parameter count
(4*r*dim), one shared input subspace, and adapts k as well. ``targets=('qkv',)`` is the fused analogue
of PEFT's usual ``target_modules=['query', 'value']``.

Why not peft: peft requires transformers and accelerate at run time (vitkit uses transformers only as a
test reference), and it renames wrapped parameters (``base_model.model.<name>.base_layer.weight``), so
vitkit's checkpoint writers, the optimiser's parameter groups and resume would all need to know peft's
names. The adapter here is a subclass of ``nn.Linear`` that keeps the base ``weight``/``bias`` under
their own names, so a base checkpoint still loads into an adapted model, and about 200 lines suffice.

The lifecycle: ``apply_lora(model, cfg)`` -> train -> ``save_adapters(model, dir)`` (adapters + head
alone, a few hundred KB) and/or ``merge_lora(model)`` -> ``vitkit.save_pretrained(model, ..., format=...)``
(a plain VisionTransformer, any format). ``load_adapters(base, dir)`` puts saved adapters on a base model.

The ``vitkit train`` flags: ``--lora-rank R`` (enables LoRA), ``--lora-alpha A``, ``--lora-dropout P`` and
``--lora-targets qkv,proj,fc1,fc2``; a run saves ``best/`` and ``last/`` merged (plain models every use
reads) and the adapters alone in ``OUT/adapters/`` (``vitkit.training.peft``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .choices import LORA_TARGETS
from .config import PretrainedCfg, ViTConfig, reject_unknown_fields
from .errors import CheckpointError, ConfigError
from .fileio import atomic_write
from .model import VisionTransformer
from .weights import validate
from .weights.readers import read_weight_file
from .weights.validate import ALLOW_NONFINITE_ENV, check_dtypes, check_finite
from .weights.writers import write_safetensors

logger = logging.getLogger(__name__)

# target -> the submodule of a Block that it adapts (q, k, v: models with separate projections, as EVA-02-B/L)
TARGET_PATHS = {"qkv": "attn.qkv", "q": "attn.q_proj", "k": "attn.k_proj", "v": "attn.v_proj", "proj": "attn.proj",
                "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
assert tuple(TARGET_PATHS) == LORA_TARGETS
HEADS = ("head", "head_dist")  # trained beside the adapters (a new task needs its own classifier)
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_FORMAT = "vitkit-lora"
# ViTConfig fields that do not change the base weights' shapes or values (training-only or the head)
MAX_CLASSES = 1_000_000  # a head this wide is already 768 M weights
MAX_RANK = 4096  # beyond any linear's width in a ViT; a hostile config's 10**12 is refused, never allocated
_NOT_ARCHITECTURE = ("num_classes", "drop_rate", "attn_drop_rate", "drop_path_rate", "head_drop_rate")


@dataclass(frozen=True)
class LoRAConfig:
    """What to adapt and how: ``rank`` r, ``alpha`` (the update is scaled by alpha / r), ``dropout`` on the
    adapter's input (training only), ``targets`` among qkv (or q, k, v), proj, fc1, fc2, and whether the head trains."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("qkv",)
    train_head: bool = True

    def __post_init__(self) -> None:
        raw = self.targets
        targets = (raw,) if isinstance(raw, str) else tuple(raw) if isinstance(raw, (list, tuple)) else ()
        object.__setattr__(self, "targets", targets)  # lists from JSON become tuples
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or not 1 <= self.rank <= MAX_RANK:
            self._fail("rank", self.rank, f"a positive integer up to {MAX_RANK} (e.g. 8)")
        if not (_is_number(self.alpha) and math.isfinite(self.alpha) and self.alpha > 0):
            self._fail("alpha", self.alpha, "a number > 0 (e.g. 16; the update is scaled by alpha / rank)")
        if not (_is_number(self.dropout) and 0.0 <= self.dropout < 1.0):
            self._fail("dropout", self.dropout, "a probability in [0, 1)")
        bad = [t for t in targets if not isinstance(t, str) or t not in LORA_TARGETS]
        if bad or not targets or len(set(targets)) != len(targets):
            self._fail("targets", raw, f"distinct names among {', '.join(LORA_TARGETS)} (at least one)")
        if not isinstance(self.train_head, bool):
            self._fail("train_head", self.train_head, "true or false")

    def _fail(self, name: str, value: Any, expected: str) -> None:
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:80] + "..."
        raise ConfigError(f"LoRAConfig.{name}={shown} is not allowed: expected {expected}.")

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoRAConfig:
        if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
            raise ConfigError(f"A LoRA config must be an object of LoRAConfig fields, got {type(data).__name__}.")
        reject_unknown_fields(cls, data, "LoRAConfig field(s)")
        return cls(**data)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class LoRALinear(nn.Linear):
    """An ``nn.Linear`` plus a low-rank update. It takes over the base layer's own ``weight`` and ``bias``
    parameters (no copy), so their state-dict names stay those of the plain model."""

    def __init__(self, base: nn.Linear, *, rank: int, alpha: float, dropout: float = 0.0) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.register_parameter("bias", base.bias)
        kw = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Linear(base.in_features, rank, bias=False, **kw)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False, **kw)
        self.lora_dropout = nn.Dropout(dropout)
        self.scaling = alpha / rank
        self.reset_lora()

    @torch.no_grad()
    def reset_lora(self) -> None:
        """PEFT's initialisation: A as nn.Linear's default (Kaiming-uniform), B zero -> a zero update."""
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def delta_weight(self) -> torch.Tensor:
        """The update to ``weight``: scaling * B @ A, (out, in), computed in float32."""
        return (self.lora_B.weight.float() @ self.lora_A.weight.float()) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling

    def merged(self) -> nn.Linear:
        """A plain nn.Linear holding ``weight + delta`` (the same Parameter objects, updated in place)."""
        with torch.no_grad():
            self.weight.copy_((self.weight.float() + self.delta_weight()).to(self.weight.dtype))
        plain = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        plain.weight = self.weight
        plain.register_parameter("bias", self.bias)
        return plain

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.lora_A.out_features}, scaling={self.scaling:g}"


def _check_model(model: nn.Module) -> VisionTransformer:
    if not isinstance(model, VisionTransformer):
        raise ConfigError(f"LoRA adapts a vitkit VisionTransformer, got {type(model).__name__}. Build the model "
                          f"with vitkit.create_model / vitkit.from_pretrained.")
    return model


def _targets(model: VisionTransformer, targets: tuple[str, ...]) -> dict[str, nn.Linear]:
    """``{'blocks.{i}.attn.qkv': module, ...}`` for each block and target, in block order."""
    have = [t for t, path in TARGET_PATHS.items() if isinstance(_get(model.blocks[0], path), nn.Linear)]
    missing = [t for t in targets if t not in have]
    if missing:
        raise ConfigError(f"LoRA targets {', '.join(missing)} are not linear layers of this model's blocks; "
                          f"it has {', '.join(have)}. Choose among those (e.g. q,v for separate projections).")
    return {f"blocks.{i}.{TARGET_PATHS[t]}": block.get_submodule(TARGET_PATHS[t])
            for i, block in enumerate(model.blocks) for t in targets}


def _get(block: nn.Module, path: str) -> nn.Module | None:
    try:
        return block.get_submodule(path)
    except AttributeError:
        return None


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """The adapted linears of ``model`` by name (empty for a plain model)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent), attr, module)


def apply_lora(model: nn.Module, cfg: LoRAConfig) -> VisionTransformer:
    """Wrap ``cfg.targets`` of every block of ``model`` in LoRA adapters, IN PLACE, and freeze the rest.

    This mutates the model it is given (and returns it): targets become ``LoRALinear`` (same base
    parameters), every parameter except the adapters (and the head(s) when ``cfg.train_head``) gets
    ``requires_grad=False``, and ``model.lora_config`` records ``cfg``. A model already adapted is refused.
    """
    model = _check_model(model)
    if lora_layers(model):
        raise ConfigError("This model already has LoRA adapters. Merge them first (vitkit.lora.merge_lora) or "
                          "start from the base model.")
    for name, linear in _targets(model, cfg.targets).items():
        _set(model, name, LoRALinear(linear, rank=cfg.rank, alpha=cfg.alpha, dropout=cfg.dropout))
    for name, p in model.named_parameters():
        p.requires_grad_(".lora_" in name or (cfg.train_head and name.split(".")[0] in HEADS))
    model.lora_config = cfg
    counts = trainable_parameters(model)
    logger.info("LoRA %s on %d linears: %d of %d parameters train (%.2f%%)", ",".join(cfg.targets),
                len(lora_layers(model)), counts["trainable"], counts["total"], 100 * counts["fraction"])
    return model


def merge_lora(model: nn.Module) -> VisionTransformer:
    """Fold every adapter into its linear's weight, IN PLACE: the model becomes a plain VisionTransformer
    (saveable to every format) computing what the adapted model computed in eval mode. All parameters
    train again afterwards, as in a freshly built model. A model without adapters is returned unchanged."""
    model = _check_model(model)
    for name, layer in lora_layers(model).items():
        _set(model, name, layer.merged())
    for p in model.parameters():
        p.requires_grad_(True)
    if hasattr(model, "lora_config"):
        del model.lora_config
    return model


def trainable_parameters(model: nn.Module) -> dict[str, Any]:
    """``{'trainable': n, 'total': n, 'fraction': trainable / total}`` counting parameters (not tensors)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total, "fraction": trainable / total if total else 0.0}


# ---------------------------------------------------------------------- adapters alone
def architecture_hash(config: ViTConfig) -> str:
    """A short digest of what fixes the base weights' shapes and meaning (not the head or dropout rates)."""
    arch = {k: v for k, v in config.to_dict().items() if k not in _NOT_ARCHITECTURE}
    return hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()[:16]


def _adapter_state(model: VisionTransformer, cfg: LoRAConfig) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items()
            if ".lora_" in k or (cfg.train_head and k.split(".")[0] in HEADS)}


def save_adapters(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write the adapters (and the trained head) of an adapted model to the folder ``path``:
    ``adapter_model.safetensors`` (with each tensor's CRC-32, as vitkit writes weights) and
    ``adapter_config.json`` (the LoRAConfig, the base model's name and architecture hash, the head's classes).
    Each file is written atomically. Returns the folder."""
    model = _check_model(model)
    cfg = getattr(model, "lora_config", None)
    if cfg is None or not lora_layers(model):
        raise ConfigError("This model has no LoRA adapters to save: call vitkit.lora.apply_lora(model, cfg) first, "
                          "or save the whole model with vitkit.save_pretrained.")
    out = Path(path).expanduser()
    state = {k: v.detach().to("cpu").contiguous() for k, v in _adapter_state(model, cfg).items()}
    pcfg = model.pretrained_cfg
    meta = {"format": ADAPTER_FORMAT, "lora": cfg.to_dict(), "base_model": model.model_name,
            "base_architecture_hash": architecture_hash(model.config), "num_classes": model.num_classes,
            "pretrained_cfg": pcfg.to_dict() if pcfg is not None else None}
    write_safetensors(state, out / ADAPTER_WEIGHTS)  # damaged bytes fail their checksum when loaded
    text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
    atomic_write(out / ADAPTER_CONFIG, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    logger.info("saved %d adapter tensors to %s", len(state), out)
    return out


def _read_adapter_config(folder: Path) -> dict[str, Any]:
    path = folder / ADAPTER_CONFIG
    if not os.path.lexists(path):
        raise CheckpointError(f"{str(folder)!r} holds no {ADAPTER_CONFIG}: expected a folder written by "
                              f"vitkit.lora.save_adapters ({ADAPTER_CONFIG} + {ADAPTER_WEIGHTS}).")
    meta = validate.read_json_file(path)  # a regular file, bounded in size and depth
    if meta.get("format") != ADAPTER_FORMAT or not isinstance(meta.get("lora"), dict):
        raise CheckpointError(f"{str(path)!r} is not a vitkit LoRA adapter config (expected \"format\": "
                              f"\"{ADAPTER_FORMAT}\" and a \"lora\" section).")
    return meta


def _read_adapter_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """The saved tensors, read and checked as weights are: a regular file, a sound header and checksums,
    floating point, and finite unless the caller allows otherwise (``VITKIT_ALLOW_NONFINITE=1``)."""
    path = folder / ADAPTER_WEIGHTS
    if not os.path.lexists(path):
        raise CheckpointError(f"{str(folder)!r} holds no {ADAPTER_WEIGHTS}: save the adapters again with "
                              "vitkit.lora.save_adapters.")
    ckpt = read_weight_file(path)
    if ckpt.kind != "safetensors":
        raise CheckpointError(f"{str(path)!r} is a {ckpt.kind} file, expected safetensors. Save the adapters again "
                              "with vitkit.lora.save_adapters.")
    state = dict(ckpt.tensors)
    check_dtypes(state, str(path))
    if os.environ.get(ALLOW_NONFINITE_ENV) != "1":
        check_finite(state, str(path))
    return state


def _saved_head(meta: dict[str, Any], model: VisionTransformer, path: Path) -> tuple[int, PretrainedCfg | None]:
    """(the saved head's class count, the model's pretrained config as it will be), checked before any change."""
    num_classes = meta.get("num_classes", model.num_classes)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or not 0 <= num_classes <= MAX_CLASSES:
        raise CheckpointError(f"{str(path)!r} holds num_classes={validate._short(num_classes)}, expected an "
                              f"integer in 0..{MAX_CLASSES}. Save the adapters again with vitkit.lora.save_adapters.")
    saved = meta.get("pretrained_cfg") or {}
    pcfg = model.pretrained_cfg
    if pcfg is None or num_classes == model.num_classes:
        return num_classes, pcfg
    if not isinstance(saved, dict):
        raise CheckpointError(f"{str(path)!r} holds a pretrained_cfg that is a {type(saved).__name__}, expected "
                              "an object.")
    try:
        return num_classes, pcfg.replace(num_classes=num_classes,
                                         **{k: saved[k] for k in ("label_names", "multi_label") if k in saved})
    except (ConfigError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{str(path)!r} holds an invalid head description: {exc}") from None


def _expected_shapes(model: VisionTransformer, cfg: LoRAConfig, num_classes: int) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor an adapter file for ``model`` must hold."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, linear in _targets(model, cfg.targets).items():
        shapes[f"{name}.lora_A.weight"] = (cfg.rank, linear.in_features)
        shapes[f"{name}.lora_B.weight"] = (linear.out_features, cfg.rank)
    if cfg.train_head and num_classes > 0:
        for head in HEADS[: 1 + int(model.config.distilled)]:
            shapes[f"{head}.weight"] = (num_classes, model.num_features)
            shapes[f"{head}.bias"] = (num_classes,)
    return shapes


def _check_shapes(state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], folder: Path) -> None:
    missing = [k for k in expected if k not in state]
    unexpected = sorted(k for k in state if k not in expected)
    mis = [f"{k}: expected {expected[k]}, found {tuple(state[k].shape)}" for k in expected
           if k in state and tuple(state[k].shape) != expected[k]]
    if missing or unexpected or mis:
        parts = [f"{label} {', '.join(items[:6])}{' ...' if len(items) > 6 else ''}"
                 for label, items in (("missing:", missing), ("unexpected:", unexpected), ("mis-shaped:", mis))
                 if items]
        raise CheckpointError(f"The adapters in {str(folder)!r} do not fit this model ({'; '.join(parts)}). "
                              f"They were saved for another rank, targets or architecture; load them onto the base "
                              f"model they were trained on.")


def load_adapters(model: nn.Module, path: str | os.PathLike[str]) -> VisionTransformer:
    """Put the adapters (and head) saved in the folder ``path`` onto ``model``, IN PLACE, and return it.

    The base architecture must be the one the adapters were trained on (its hash is checked; the base
    weights themselves cannot be checked, so load onto the same base checkpoint). Everything is
    validated before the model changes: a plain model is then adapted with the saved LoRAConfig, its head
    resized to the saved classes (with their names) when they differ, and the saved tensors loaded.
    """
    model = _check_model(model)
    folder = Path(path).expanduser()
    meta = _read_adapter_config(folder)
    try:
        cfg = LoRAConfig.from_dict(meta["lora"])
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{str(folder / ADAPTER_CONFIG)!r} holds an invalid LoRA config: {exc}") from None
    saved_hash, ours = meta.get("base_architecture_hash"), architecture_hash(model.config)
    if saved_hash != ours:
        base = meta.get("base_model") if isinstance(meta.get("base_model"), str) else "a model"
        raise CheckpointError(f"The adapters in {str(folder)!r} were trained on {validate._short(base)} with another "
                              f"architecture (hash {validate._short(saved_hash)} vs this model's {ours}). Load them "
                              "onto the base model they were trained on.")
    current = getattr(model, "lora_config", None)
    if lora_layers(model) and current != cfg:
        raise CheckpointError(f"This model already has adapters ({current}) that differ from the saved ones ({cfg}). "
                              f"Load the adapters onto the plain base model.")
    num_classes, pcfg = _saved_head(meta, model, folder / ADAPTER_CONFIG)
    state = _read_adapter_tensors(folder)
    _check_shapes(state, _expected_shapes(model, cfg, num_classes), folder)
    # everything is checked: only now does the model change
    if cfg.train_head and num_classes != model.num_classes:
        model.reset_classifier(num_classes)
        if pcfg is not None:
            model.pretrained_cfg = pcfg
    if not lora_layers(model):
        apply_lora(model, cfg)
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:  # a bug, not a user error: the names were checked above
        raise RuntimeError(f"adapter keys left unloaded: {result.unexpected_keys}")
    logger.info("loaded %d adapter tensors from %s", len(state), folder)
    return model
