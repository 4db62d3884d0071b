"""`vitkit train` / `vitkit eval` flags, generated from the training settings' fields (``vitkit.training.config``).

Each setting declares its check, help text and flag once, as field metadata; here each field becomes one
argparse flag (type, default, choices, metavar, nargs), and ``settings_from_args`` reads the parsed values back
as flat settings. A setting whose default depends on the data says both presets in its help.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable
from typing import Any

from ..training.config import (
    DIGITS_DEFAULTS,
    FOLDER_DEFAULTS,
    GROUPS,
    WHERE,
    Settings,
    flag_of,
    flat_name,
)

# the group of flags each settings group's fields appear under in --help
TITLES = {"source": "data", "network": "model and output", "optim": "schedule, optimizer and loss",
          "augment": "augmentation", "distillation": "distillation", "lora": "LoRA (parameter-efficient fine-tuning)",
          "run": "running"}


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(f"{v:g}" for v in value)
    return "the number of cores" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def preset_help(name: str, what: str = "") -> str:
    """Help text for a setting whose default depends on the data (the digits or an image folder)."""
    digits, folder = DIGITS_DEFAULTS[name], FOLDER_DEFAULTS[name]
    return f"{what}{'; ' if what else ''}default depends on the data: {_show(digits)} for the digits, " \
           f"{_show(folder)} for an image folder"


def _argument(f: dataclasses.Field, default: Any) -> tuple[str, dict[str, Any]]:
    """(flag, argparse keyword arguments) of one setting."""
    meta, name = f.metadata, flat_name(f)
    help_text = preset_help(name, meta.get("help", "")) if name in DIGITS_DEFAULTS else meta.get("help", "")
    kwargs: dict[str, Any] = {"dest": name, "help": help_text}
    if meta.get("action") == "append":
        return flag_of(f), {**kwargs, "action": "append", "default": [], "metavar": meta.get("metavar")}
    if meta.get("action") == "store_const":
        return flag_of(f), {**kwargs, "action": "store_const", "const": meta["const"], "default": default}
    if isinstance(default, bool):
        return flag_of(f), {**kwargs, "action": "store_false" if default else "store_true", "default": default}
    kwargs["default"] = list(default) if isinstance(default, tuple) and meta.get("nargs") else default
    for key in ("metavar", "nargs", "const"):
        if meta.get(key) is not None:
            kwargs[key] = meta[key]
    if meta.get("parse") is not None:
        kwargs["type"] = meta["parse"]
    choices = getattr(meta.get("check"), "choices", None)
    if choices:
        kwargs["choices"] = choices
    if isinstance(default, tuple) and meta.get("parse") is not None and not meta.get("nargs"):
        kwargs["default"] = default  # a comma-separated list keeps its tuple default
    return flag_of(f), kwargs


def add_settings(parser: argparse.ArgumentParser, group: str, *, only: Iterable[str] | None = None,
                 skip: Iterable[str] = (), defaults: dict[str, Any] | None = None, title: str | None = None) -> None:
    """One flag per setting of ``group`` (flat names in ``only``, when given, minus ``skip``), under its title;
    ``defaults`` replaces a field's default (e.g. None: 'the run's' for `vitkit eval`)."""
    cls: type[Settings] = GROUPS[group]
    wanted, skipped, defaults = (None if only is None else set(only)), set(skip), defaults or {}
    g = parser.add_argument_group(title or TITLES[group])
    for f in dataclasses.fields(cls):
        name = flat_name(f)
        if not f.metadata.get("cli", True) or name in skipped or (wanted is not None and name not in wanted):
            continue
        default = defaults.get(name, f.default_factory() if f.default_factory is not dataclasses.MISSING
                               else f.default)
        flag, kwargs = _argument(f, default)
        g.add_argument(flag, **kwargs)


def settings_from_args(args: argparse.Namespace, groups: Iterable[str] = tuple(GROUPS)) -> dict[str, Any]:
    """The flat settings the parsed flags of ``groups`` give (each flag's value turned into its setting's)."""
    out: dict[str, Any] = {}
    for group in groups:
        for f in dataclasses.fields(GROUPS[group]):
            name = flat_name(f)
            if not hasattr(args, name):
                continue
            value = getattr(args, name)
            convert = f.metadata.get("to_setting")
            out[name] = convert(value) if convert is not None and value is not None else value
    return out


def setting_flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """The flag of each training setting ``parser`` has, by its flat name (what a ``keyword`` hint naming the
    setting says on that command line: ``vitkit train`` has them all, ``vitkit eval`` its data flags)."""
    return {a.dest: a.option_strings[-1] for a in parser._actions if a.option_strings and a.dest in WHERE}
