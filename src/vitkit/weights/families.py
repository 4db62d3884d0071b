"""The known checkpoint families, and detection of the family a checkpoint belongs to."""

from __future__ import annotations

from ..choices import WEIGHT_FORMATS
from ..errors import CheckpointError, ConfigError, Hint
from . import dinov3, hf, native, npz, open_clip, timm
from .formats import Family
from .readers import Checkpoint

FAMILIES: dict[str, Family] = {f.name: f for f in (native.FAMILY, timm.FAMILY, hf.FAMILY, npz.FAMILY,
                                                   open_clip.FAMILY, dinov3.FAMILY)}
FORMATS = WEIGHT_FORMATS
assert tuple(FAMILIES) == FORMATS  # the CLI offers the same names without importing the families
# a command without --format can still convert the file, naming its format
_CONVERT = " convert it with `vitkit convert FILE OUT --from FORMAT --to vitkit` and use OUT."
KNOWN_FORMAT = Hint(" If you know the format, pass format= one of them.", option="format",
                    cli=" If you know the format, pass {flag} with one of them.",
                    cli_without=" If you know the format," + _CONVERT)
CHOOSE_FORMAT = Hint(" Pass format= one of them to choose.", option="format", cli=" Pass {flag} with one of them.",
                     cli_without=" To choose, " + _CONVERT)


def families() -> dict[str, Family]:
    return dict(FAMILIES)


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ConfigError(f"Unknown weight format {name!r}: expected one of {', '.join(FORMATS)}.")
    return FAMILIES[name]


def detect_format(ckpt: Checkpoint, format: str | None = None) -> Family:
    """The family of a checkpoint: ``format`` when given, else the one family that claims it."""
    if format is not None:
        return get_family(format)
    table = FAMILIES
    claims = [f for f in table.values() if f.claims(ckpt)]
    for specific in ("vitkit", "dinov3"):  # vitkit's marker, Meta's storage_tokens: their other names are timm's
        if table[specific] in claims:
            return table[specific]
    if len(claims) == 1:
        return claims[0]
    keys = list(ckpt.tensors)
    seen = ", ".join(keys[:8]) + (f", ... ({len(keys)} tensors)" if len(keys) > 8 else "")
    if not claims:
        known = "; ".join(f"{f.name} ({f.description})" for f in table.values())
        raise CheckpointError(f"Cannot tell the format of {ckpt.path}: its tensor names ({seen or 'none'}) match no "
                              f"known checkpoint family. Known: {known}.{KNOWN_FORMAT.text}", hints=(KNOWN_FORMAT,))
    names = ", ".join(f.name for f in claims)
    raise CheckpointError(f"{ckpt.path} is ambiguous: its tensor names ({seen}) match several formats "
                          f"({names}).{CHOOSE_FORMAT.text}", hints=(CHOOSE_FORMAT,))
