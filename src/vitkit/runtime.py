"""One runtime for every use: a model from any source, the device to run on, and a caller's model borrowed
for inference and handed back exactly as it was (mode and device).

This floor sits above ``registry`` and ``weights`` and below the uses (predict, features, attention,
summary, export, training) and the CLI.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .config import PretrainedCfg
from .errors import CheckpointError, ConfigError, Hint, VitkitError
from .graphmodel import is_graph_file, load_graph_model, read_description
from .model import VisionTransformer
from .registry import create_model, get_entry, is_registered, known_configs
from .weights import from_checkpoint, inventory
from .weights.families import CHOOSE_FORMAT, KNOWN_FORMAT
from .weights.load import NOT_STRICT, OWN_MODEL
from .weights.native import AS_TIMM
from .weights.sources import HUB_PREFIX, cached_snapshot, looks_like_repo_id
from .weights.validate import NONFINITE

#: what a use accepts as a model: a registry name, a saved model folder / checkpoint / ``hf-hub:`` id, or a module
ModelSpec = str | os.PathLike | torch.nn.Module
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".npz", ".ckpt", ".tar")
DEVICE_HINT = "use 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'"
# A use (predict, features, attention, inspect) takes none of the loaders' options (strict=, format=,
# allow_nonfinite=): its caller loads the model with them and passes it.
_PASS = " and pass the model"
USE_WORDING = {
    NOT_STRICT: ", or load the tensors that fit with vitkit.create_model(NAME, pretrained=FILE, strict=False)" + _PASS,
    OWN_MODEL: "; model=FILE without weights= builds the model the checkpoint describes",
    NONFINITE: f" To load it anyway, load it with vitkit.create_model(NAME, pretrained=FILE, allow_nonfinite=True) "
               f"or vitkit.from_pretrained(FILE, allow_nonfinite=True){_PASS}.",
    KNOWN_FORMAT: f" If you know the format, load it with vitkit.from_pretrained(FILE, format=...){_PASS}.",
    CHOOSE_FORMAT: f" To choose, load it with vitkit.from_pretrained(FILE, format=...){_PASS}.",
    AS_TIMM: f" Load it with vitkit.from_pretrained(FILE, format='timm'){_PASS}.",
}
NAME_OR_SOURCE = Hint("; pass either a registry name with weights or a source alone, not both",
                      cli="; pass either --model NAME --weights SOURCE or --model SOURCE alone, not both")


def _is_name(spec: str) -> bool:
    """A registry name (or what can only be meant as one), rather than a weight source: not an existing path,
    an ``hf-hub:`` id, a cached Hub repository (ORG/NAME, as transformers takes it) or what has the form of a
    path (a folder, a checkpoint suffix), which then fails as a path that does not exist."""
    if is_registered(spec):
        return True
    if spec.startswith(HUB_PREFIX) or Path(spec).expanduser().exists():
        return False
    if looks_like_repo_id(spec):  # not cached: an unknown name whose error says what to download
        return cached_snapshot(spec) is None
    return not _looks_like_path(spec)


def _looks_like_path(spec: str) -> bool:
    return "/" in spec or os.sep in spec or spec.startswith((".", "~")) or \
        Path(spec).suffix.lower() in CHECKPOINT_SUFFIXES


def from_pretrained(source: str | os.PathLike[str], *, format: str | None = None, num_classes: int | None = None,
                    img_size: int | tuple[int, int] | None = None, strict: bool = True,
                    device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                    num_labels: int | None = None, torch_dtype: torch.dtype | str | None = None,
                    **overrides: Any) -> VisionTransformer:
    """Build the model a checkpoint describes and load it (see ``vitkit.weights.from_checkpoint``), knowing
    every registered architecture (head counts, named timm architectures).

    transformers' spellings work too: ``num_labels`` for ``num_classes`` (a fresh head when it differs) and
    ``torch_dtype`` (a ``torch.dtype`` or its name, e.g. ``'float16'``; ``'auto'``: vitkit's default) for ``dtype``.
    """
    num_classes = _same_value("num_classes", num_classes, "num_labels", num_labels)
    dtype = _same_value("dtype", dtype, "torch_dtype", _as_dtype(torch_dtype))
    return from_checkpoint(source, format=format, num_classes=num_classes, img_size=img_size, strict=strict,
                           device=device, dtype=dtype, known=known_configs(), **overrides)


def _same_value(name: str, value: Any, alias: str, alias_value: Any) -> Any:
    """``value`` or its transformers alias; both given and different is an error."""
    if alias_value is None:
        return value
    if value is not None and value != alias_value:
        raise ConfigError(f"{name}={value!r} and {alias}={alias_value!r} disagree; pass one of them.")
    return alias_value


def _as_dtype(value: torch.dtype | str | None) -> torch.dtype | None:
    if value is None or isinstance(value, torch.dtype) or value == "auto":
        return None if value == "auto" else value
    dtype = getattr(torch, str(value).removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ConfigError(f"torch_dtype={value!r} is not a floating-point torch dtype: use e.g. 'float32', "
                          f"'float16', 'bfloat16' or a torch.dtype.")
    return dtype


DATA_CONFIG_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


def resolve_data_config(args: Any = None, pretrained_cfg: dict[str, Any] | None = None, model: Any = None,
                        **_: Any) -> dict[str, Any]:
    """The preprocessing a model expects, as the dict timm's ``resolve_data_config`` returns: input_size
    (C, H, W), interpolation, mean, std, crop_pct, crop_mode.

    Called as timm users call it, ``resolve_data_config({}, model=model)``, or ``resolve_data_config(model)``.
    ``model``: a model object, a registry name or a weight source (only its headers are read); values in
    ``args`` (a dict) or ``pretrained_cfg`` override the model's (``img_size`` sets the input's height and width).
    """
    if model is None and not isinstance(args, dict) and args is not None:
        args, model = {}, args  # resolve_data_config(model)
    if model is None and pretrained_cfg is None:
        raise ConfigError("resolve_data_config needs a model: resolve_data_config({}, model=model) or "
                          "resolve_data_config(model).")
    config = _data_config_of(model) if model is not None else {}
    for source in (pretrained_cfg or {}, args or {}):
        config.update({k: source[k] for k in DATA_CONFIG_KEYS if source.get(k) is not None})
        if source.get("img_size") is not None:
            size = source["img_size"]
            h, w = (size, size) if isinstance(size, int) else tuple(size)
            config["input_size"] = (config.get("input_size", (3,))[0], h, w)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}


def _data_config_of(model: torch.nn.Module | str | os.PathLike[str]) -> dict[str, Any]:
    if isinstance(model, torch.nn.Module):
        inner = getattr(model, "model", model)  # a FeatureMaps wrapper: the model inside
        cfg = getattr(inner, "default_cfg", None) or {}
        pcfg = PretrainedCfg.from_dict(cfg) if cfg else PretrainedCfg()
    else:
        pcfg = pretrained_cfg_of(model)
    return {"input_size": tuple(pcfg.input_size), "interpolation": pcfg.interpolation, "mean": tuple(pcfg.mean),
            "std": tuple(pcfg.std), "crop_pct": pcfg.crop_pct, "crop_mode": pcfg.crop_mode}


def load_model(
    spec: str | os.PathLike[str],
    *,
    weights: Any = None,
    num_classes: int | None = None,
    img_size: int | tuple[int, int] | None = None,
    device: str | torch.device | None = None,
    **overrides: Any,
) -> torch.nn.Module:
    """A model from what a user typed: a registry name (with optional ``weights``), or a saved model
    folder, a checkpoint file or an ``hf-hub:`` id (the architecture is read from the source), or a graph vitkit
    exported (an OpenVINO ``.xml`` or an ``.onnx`` with its description beside it; it runs on the CPU)."""
    spec = os.fspath(spec)
    if is_graph_file(spec):
        if weights is not None or num_classes is not None or img_size is not None or overrides:
            raise ConfigError(f"{spec!r} is an exported graph: it runs as it was exported, so weights, num_classes, "
                              f"img_size and other overrides do not apply to it; drop them.")
        if pick_device(device).type != "cpu" and device not in (None, "auto"):
            raise ConfigError(f"{spec!r} is an exported graph that runs on the CPU; device={str(device)!r} cannot "
                              f"run it. Use device='cpu' (or leave it out).")
        return load_graph_model(spec)
    if _is_name(spec):  # an unknown name raises UnknownModelError (with the closest names) in create_model
        return create_model(spec, pretrained=weights, num_classes=num_classes, img_size=img_size, device=device,
                            **overrides)
    if weights is not None:
        raise ConfigError(f"{spec!r} is a weight source itself{NAME_OR_SOURCE.text} (weights={weights!r}).",
                          hints=(NAME_OR_SOURCE,))
    return from_pretrained(spec, num_classes=num_classes, img_size=img_size, device=device, **overrides)


def pretrained_cfg_of(spec: str | os.PathLike[str]) -> PretrainedCfg:
    """The preprocessing of a registry name, a weight source or an exported graph, read off the checkpoint's
    headers and config files or the graph's description (no weights are loaded)."""
    spec = os.fspath(spec)
    if is_graph_file(spec):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise CheckpointError(f"Cannot load the exported model {spec!r}: the file does not exist.")
        return read_description(path)["pretrained_cfg"]
    if _is_name(spec):  # an unknown name raises UnknownModelError with the closest names
        return get_entry(spec).pretrained_cfg
    inv = inventory(spec, known=known_configs())
    if inv.pretrained_cfg is None:
        raise CheckpointError(f"Cannot read the preprocessing of {spec!r}: {'; '.join(inv.problems)}",
                              hints=[hint for error in inv.errors for hint in error.hints])
    return inv.pretrained_cfg


def pick_device(device: str | torch.device | None = None, local_rank: int = 0) -> torch.device:
    """``device`` as asked, checked ('auto'/None: this rank's GPU if there is one, else the CPU).

    Every command resolves its ``--device`` here, so 'cuda' on a machine without a GPU, 'mps' without
    Apple's backend or a misspelt name end in one ConfigError line, never in a traceback from torch.
    """
    if device is None or device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"device={device!r} is not a device name: {DEVICE_HINT}.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={str(device)!r} asks for a GPU but torch sees none (CPU build or no driver); "
                              "use 'cpu'.")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"device={str(device)!r}: this machine has {count} GPU(s) (cuda:0..cuda:{count - 1}).")
        return dev if dev.index is not None else torch.device(f"cuda:{local_rank}")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device={str(device)!r} asks for Apple's MPS backend, which is not available here; "
                          "use 'cpu'.")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device={str(device)!r} is not supported: {DEVICE_HINT}.")
    return dev


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (the CPU for a module with neither)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def resolve_model(model: ModelSpec, *, weights: Any = None, device: str | torch.device | None = None,
                  **overrides: Any) -> torch.nn.Module:
    """A model object as given (untouched), or built from a registry name (with ``weights``) or a saved model
    path on ``device``. Borrow a given object with ``borrowed(model, device)`` to run it."""
    if isinstance(model, torch.nn.Module):
        if weights is not None:
            raise ConfigError("weights= is for a model name; load the weights into the model object yourself.")
        return model
    try:
        return load_model(model, weights=weights, device=pick_device(device), **overrides)
    except VitkitError as exc:  # the loaders' advice names their options, which a use does not take
        said = exc.reworded(USE_WORDING)
        if said is exc:
            raise
        raise said.with_traceback(exc.__traceback__) from None


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model`` in eval mode inside the block, back in the mode it had after it (every submodule's own flag)."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes.items():
            module.training = training


@contextlib.contextmanager
def borrowed(model: torch.nn.Module, device: str | torch.device | None = None) -> Iterator[torch.nn.Module]:
    """Borrow ``model`` for inference: eval mode, on ``device`` when one is asked for (default: where it is),
    and handed back afterwards in the mode and on the device it had, whatever happens inside."""
    home = model_device(model)
    target = home if device is None else pick_device(device)
    moved = target != home
    with eval_mode(model):
        if moved:
            model.to(target)
        try:
            yield model
        finally:
            if moved:
                model.to(home)
