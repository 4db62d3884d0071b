"""Field validation in one place: checkers attached to dataclass fields, and the CLI flags generated from them.

A *checker* takes a value and returns what was expected (a phrase such as ``"a positive integer"``) when the
value is wrong, or ``None`` when it is fine. A dataclass declares its checks with its fields::

    @dataclass
    class Settings:
        batch_size: int = checked(32, positive_int, help="Images per step.")
        precision: str = checked("fp32", one_of(("fp32", "bf16")), help="Numeric precision.")

        def __post_init__(self) -> None:
            check_dataclass(self, "Settings")   # ConfigError: Settings.batch_size=0 is not allowed: expected ...

``cli_arguments(Settings)`` turns the same fields into argparse specs (flag, type, default, help, choices), so
a setting is declared once. The JSON schemas of weight files (``vitkit.weights.validate``) are mappings of key
to checker built from the same checkers.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import ConfigError

Checker = Callable[[Any], "str | None"]
T = TypeVar("T")


# ---------------------------------------------------------------------- predicates and messages
def is_int(v: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """A finite int or float that is not a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def short(value: Any, limit: int = 60, tail: str = "...") -> str:
    """``repr(value)`` cut to ``limit`` characters (error messages never echo a whole hostile value)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + tail


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` naming the choice closest to ``word``, or ``''`` when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def did_you_mean_any(word: str, choices: Iterable[str], n: int = 3, cutoff: float = 0.5) -> str:
    """`` Did you mean: a, b?`` naming up to ``n`` choices close to ``word``, or ``''`` when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=n, cutoff=cutoff)
    return f" Did you mean: {', '.join(close)}?" if close else ""


_PAPER_SIZES = {"ti": "tiny", "t": "tiny", "s": "small", "b": "base", "l": "large", "h": "huge", "g": "giant"}


def registry_style(name: str) -> str:
    """A paper-style model name in the registry's spelling: ``'ViT-B/16'`` -> ``'vit_base_patch16'``
    (names in another form come back lower-cased and unchanged)."""
    match = re.fullmatch(r"vit[-_ ]?(ti|[tsblhg])[-_/ ]?(\d+)", name.strip().lower())
    if match is None:
        return name.strip().lower()
    return f"vit_{_PAPER_SIZES[match.group(1)]}_patch{match.group(2)}"


def did_you_mean_model(name: str, names: Iterable[str]) -> str:
    """`` Did you mean: a, b?`` for a model name: a paper-style name (``ViT-B/16``) suggests the registry
    names that start with its registry spelling, anything else the closest names."""
    names = list(names)
    guess = registry_style(name)
    if guess != name.strip().lower():
        close = sorted(n for n in names if n.startswith(guess))[:3]
        if close:
            return f" Did you mean: {', '.join(close)}?"
    return did_you_mean_any(name, names)


# ---------------------------------------------------------------------- checkers
def integer(v: Any) -> str | None:
    """An integer >= 0."""
    return None if is_int(v) and v >= 0 else "an integer >= 0"


def any_int(v: Any) -> str | None:
    return None if is_int(v) else "an integer"


def positive_int(v: Any) -> str | None:
    return None if is_int(v) and v >= 1 else "a positive integer"


def number(v: Any) -> str | None:
    return None if is_number(v) else "a finite number"


def positive(v: Any) -> str | None:
    return None if is_number(v) and v > 0 else "a number > 0"


def non_negative(v: Any) -> str | None:
    return None if is_number(v) and v >= 0 else "a number >= 0"


def probability(v: Any) -> str | None:
    return None if is_number(v) and 0.0 <= v < 1.0 else "a probability in [0, 1)"


def fraction(v: Any) -> str | None:
    return None if is_number(v) and 0 < v <= 1 else "a fraction in (0, 1]"


def boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def string(v: Any) -> str | None:
    return None if isinstance(v, str) else "a string"


def optional(check: Checker) -> Checker:
    """``None`` or whatever ``check`` accepts."""
    def checker(v: Any) -> str | None:
        want = None if v is None else check(v)
        return None if want is None else f"null or {want}"
    checker.choices = getattr(check, "choices", None)  # type: ignore[attr-defined]
    return checker


def optional_as(check: Checker, null: str = "None") -> Checker:
    """Like ``optional``, but spelling "no value" as ``null`` (Python settings say None, JSON says null)."""
    def checker(v: Any) -> str | None:
        want = None if v is None else check(v)
        return None if want is None else f"{null} or {want}"
    checker.choices = getattr(check, "choices", None)  # type: ignore[attr-defined]
    return checker


def int_between(low: int, high: int | None = None) -> Checker:
    """An integer in [low, high] (no upper bound when ``high`` is None)."""
    want = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
    return lambda v: None if is_int(v) and v >= low and (high is None or v <= high) else want


def number_between(low: float, high: float) -> Checker:
    """A finite number in [low, high]."""
    return lambda v: None if is_number(v) and low <= v <= high else f"a number from {low} to {high}"


def one_of(choices: Sequence[str]) -> Checker:
    """One of ``choices``, with the closest one as a hint."""
    def checker(v: Any) -> str | None:
        return None if v in choices else f"one of {', '.join(choices)}{did_you_mean(str(v), choices)}"
    checker.choices = tuple(choices)  # type: ignore[attr-defined]  # read by cli_arguments
    return checker


def list_of(check: Checker, what: str) -> Checker:
    return lambda v: None if isinstance(v, list) and all(check(x) is None for x in v) else f"a list of {what}"


def int_or_pair(v: Any) -> str | None:
    """A positive integer or a JSON list [height, width] of them."""
    ok = (is_int(v) and v > 0) or (isinstance(v, list) and len(v) == 2 and all(is_int(x) and x > 0 for x in v))
    return None if ok else "a positive integer or a list [height, width] of them"


def mapping(v: Any) -> str | None:
    """A JSON object (its own keys are checked by a nested schema, if any)."""
    return None if isinstance(v, dict) else "an object ({...})"


def all_of(*checks: Checker) -> Checker:
    """The first complaint of ``checks`` (a type check, then a range check)."""
    def checker(v: Any) -> str | None:
        return next((want for want in (c(v) for c in checks) if want is not None), None)
    return checker


# ---------------------------------------------------------------------- fields
def checked(default: Any = dataclasses.MISSING, check: Checker | None = None, *, help: str = "",  # noqa: A002
            kind: Checker | None = None, flag: str | None = None, default_factory: Any = dataclasses.MISSING,
            **metadata: Any) -> Any:
    """A dataclass field carrying its value ``check``, an optional ``kind`` (type) check reported with the
    value's type, its ``help`` text and its CLI ``flag`` (default ``--field-name``)."""
    meta = {"check": check, "kind": kind, "help": help, "flag": flag, **metadata}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def field_problems(obj: Any) -> Iterable[tuple[str, Any, str, bool]]:
    """(name, value, what was expected, whether it is a type problem) for each field of dataclass ``obj``
    that fails its checks, in declaration order."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        for key in ("kind", "check"):
            check = f.metadata.get(key)
            want = check(value) if check is not None else None
            if want is not None:
                yield f.name, value, want, key == "kind"
                break


def check_types(cls: type, values: Mapping[str, Any], what: str) -> None:
    """Raise a ConfigError naming the first of ``values`` (fields of ``cls``) whose value has the wrong type
    (unknown names are not checked; that is ``reject_unknown_fields``' task)."""
    kinds = {f.name: f.metadata.get("kind") for f in dataclasses.fields(cls)}
    for name, value in values.items():
        kind = kinds.get(name)
        want = kind(value) if kind is not None else None
        if want is not None:
            raise ConfigError(f"{what}.{name}={short(value)} ({type(value).__name__}) is not allowed: expected "
                              f"{want}.")


def check_values(obj: Any, what: str) -> None:
    """Raise a ConfigError for the first field of ``obj`` that fails its checks:
    ``WHAT.name=value is not allowed: expected ...``."""
    for name, value, want, _ in field_problems(obj):
        raise ConfigError(f"{what}.{name}={short(value)} is not allowed: expected {want}.")


def check_dataclass(obj: Any, what: str) -> None:
    """The types of every field of ``obj`` (``check_types``), then their values (``check_values``)."""
    check_types(type(obj), {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}, what)
    check_values(obj, what)


def reject_unknown_fields(cls: type, names: Any, what: str) -> None:
    """Raise a ConfigError naming each of ``names`` that is not a field of dataclass ``cls``, with the
    closest field as a hint."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(names) - known)
    if unknown:
        hints = [f"{u}{did_you_mean(u, known)}" for u in unknown]
        raise ConfigError(f"Unknown {what}: {', '.join(hints)}. Known: {', '.join(sorted(known))}.")


# ---------------------------------------------------------------------- CLI flags from fields
@dataclass(frozen=True)
class Argument:
    """One argparse flag generated from a field: ``parser.add_argument(*arg.flags, **arg.kwargs)``."""

    dest: str
    flags: tuple[str, ...]
    kwargs: dict[str, Any]

    def add_to(self, parser: Any) -> None:
        parser.add_argument(*self.flags, **self.kwargs)


def _plain_type(annotation: Any) -> type | None:
    """The scalar type of a resolved field annotation (``int | None`` gives int), or None if not scalar."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = rest[0] if len(rest) == 1 else None
    return annotation if isinstance(annotation, type) else None


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def cli_arguments(cls: type, *, only: Iterable[str] | None = None, defaults: Mapping[str, Any] | None = None,
                  help_for: Callable[[str, str], str] | None = None, show_default: bool = True) -> list[Argument]:
    """argparse specs for the fields of dataclass ``cls`` (or those named in ``only``).

    A field's ``flat`` metadata names it (its destination; default: the field's name), ``flag`` its flag
    (default ``--flat-name``), ``cli=False`` leaves it out. Type: the field's ``parse`` metadata, else its
    scalar type; ``nargs``, ``metavar``, ``const`` and ``action`` ('append', 'store_const') pass through;
    choices come from a ``one_of`` check. A bool field defaulting to False becomes a switch; one defaulting to
    True gets ``--no-`` beside it (``argparse.BooleanOptionalAction``), or is the switch its ``--no-...`` flag
    names. ``defaults`` replaces fields' defaults; ``help_for(name, help)`` rewrites a help text;
    ``show_default`` appends '(default: ...)'. Values parsed this way are checked by the dataclass itself."""
    wanted, defaults = None if only is None else set(only), defaults or {}
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        name = meta.get("flat") or f.name
        if wanted is not None and name not in wanted or meta.get("cli") is False:
            continue
        flag = meta.get("flag") or "--" + name.replace("_", "-")
        default = defaults.get(name, _default(f))
        text = meta.get("help", "")
        kwargs: dict[str, Any] = {"dest": name, "help": help_for(name, text) if help_for else text}
        kind = _plain_type(hints.get(f.name))
        if meta.get("action") == "append":
            kwargs.update(action="append", default=[], metavar=meta.get("metavar"))
        elif meta.get("action") == "store_const":
            kwargs.update(action="store_const", const=meta["const"], default=default)
        elif kind is bool or isinstance(default, bool):
            switch = "store_false" if flag.startswith("--no-") else "store_true"
            kwargs.update(action=switch if default is (switch == "store_false") else argparse.BooleanOptionalAction,
                          default=default)
        else:
            parse = meta.get("parse") or (kind if kind in (int, float, str) else None)
            if parse is not None:
                kwargs["type"] = parse
            for key in ("metavar", "nargs", "const"):
                if meta.get(key) is not None:
                    kwargs[key] = meta[key]
            choices = getattr(meta.get("check"), "choices", None)
            if choices:
                kwargs["choices"] = choices
            kwargs["default"] = list(default) if isinstance(default, tuple) and meta.get("nargs") else default
            if show_default and default is not None and kwargs["help"]:
                kwargs["help"] += f" (default: {default})"
        out.append(Argument(name, (flag,), kwargs))
    return out


class FlagValueError(ConfigError, argparse.ArgumentTypeError):
    """A command-line value its check refuses (argparse prints it as its one-line error and exits 2)."""


def cli_type(check: Checker, flag: str, base: Callable[[str], Any] = int) -> Callable[[str], Any]:
    """An argparse ``type=`` that parses with ``base`` and then applies ``check``; a bad value raises a
    ``FlagValueError`` (a ConfigError), which the CLI prints as one line with exit status 2:
    ``argument --batch-size: 0 is not allowed: expected a positive integer``."""
    def parse(text: str) -> Any:
        try:
            value = base(text)
        except ValueError:
            value = text
        want = check(value)
        if want is not None:
            raise FlagValueError(f"{text} is not allowed for {flag}: expected {want}")
        return value
    parse.__name__ = getattr(base, "__name__", "value")  # argparse names the type in its own messages
    return parse


# ---------------------------------------------------------------------- limits from the environment
L = TypeVar("L")


def limits_from_env(limits: L, variable: str) -> L:
    """``limits`` with fields overridden by ``VARIABLE="name=value,name=value"`` (unknown names and values
    that are not numbers are ignored)."""
    names = {f.name for f in dataclasses.fields(limits)}  # type: ignore[arg-type]
    for item in filter(None, os.environ.get(variable, "").split(",")):
        name, _, value = (s.strip() for s in item.partition("="))
        if name in names:
            try:
                setattr(limits, name, type(getattr(limits, name))(float(value)))
            except ValueError:
                continue
    return limits
