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

from ..checks import cli_arguments
from ..training.config import (
    DIGITS_DEFAULTS,
    FOLDER_DEFAULTS,
    GROUPS,
    WHERE,
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


def _help(name: str, text: str) -> str:
    """A preset setting's help says both presets, unless its own text already says what its default is."""
    return preset_help(name, text) if name in DIGITS_DEFAULTS and "default" not in text else text


def add_settings(parser: argparse.ArgumentParser, group: str, *, only: Iterable[str] | None = None,
                 defaults: dict[str, Any] | None = None, title: str | None = None) -> None:
    """One flag per setting of ``group`` (flat names in ``only``, when given), under its title; ``defaults``
    replaces a field's default (e.g. None: 'the run's' for `vitkit eval`). The help formatter shows defaults."""
    g = parser.add_argument_group(title or TITLES[group])
    for arg in cli_arguments(GROUPS[group], only=only, defaults=defaults, help_for=_help, show_default=False):
        arg.add_to(g)


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
