"""Atomic file writes: a reader (or a killed run) never sees a half-written file."""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import OutputError, VitkitError

TEMP_SUFFIX = ".tmp"
# Kernel and device file systems: a file written there is never what the user meant (and replacing
# /dev/null with a regular file, as a rename would as root, breaks the machine)
SYSTEM_FOLDERS = ("/dev", "/proc", "/sys")


def check_output_path(path: str | os.PathLike) -> Path:
    """``path`` as a Path if a regular file may be written there, else an ``OutputError`` saying why:
    an existing folder, device, FIFO or socket, or a place under /dev, /proc or /sys."""
    path = Path(path)
    full = os.path.realpath(path)
    system = next((root for root in SYSTEM_FOLDERS if full == root or full.startswith(root + os.sep)), None)
    if system is not None and not full.startswith("/dev/shm/"):  # /dev/shm is an ordinary tmpfs
        raise OutputError(f"Output path {str(path)!r} is under {system}, a system folder; choose a file in a "
                          "normal folder.")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return path
    except OSError as exc:
        raise OutputError(f"Output path {str(path)!r} cannot be used: {exc.strerror or exc}.") from None
    if stat.S_ISDIR(mode):
        raise OutputError(f"Output path {str(path)!r} is a folder; give a file name (e.g. {str(path / 'out')!r}).")
    if not stat.S_ISREG(mode):
        raise OutputError(f"Output path {str(path)!r} is a device, FIFO or socket, not a file; give a file name.")
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, fsync it, then rename it onto ``path``.

    The temporary file is named ``.<name>.<random>.tmp`` (see ``remove_stale_temps``) and gets the
    permissions a plain ``open`` would give; it is removed if ``write`` fails. A path that is not a regular
    file (or would be in /dev, /proc, /sys) is refused with an ``OutputError`` before anything is written.
    """
    path = check_output_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in _FULL:
            raise OutputError(f"Cannot write {str(path)!r}: {exc.strerror or exc}. Free space on that disk (or "
                              "raise the quota), or choose an output on another disk.") from exc
        raise
    return path


_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
# characters that never go into a file name made from data: separators, NUL and control characters
_UNSAFE_NAME = re.compile(r"[/\\\x00-\x1f\x7f]")
MAX_NAME_CHARS = 100


def safe_filename(name: object, *, fallback: str) -> str:
    """``name`` (a class name, a label: data, not a path) as one plain file name that stays in its folder:
    separators, NUL and control characters become ``_``, leading dots are dropped (no ``..``, no hidden
    file), and it is cut to ``MAX_NAME_CHARS``; ``fallback`` when nothing is left."""
    text = _UNSAFE_NAME.sub("_", str(name)).lstrip(". ")[:MAX_NAME_CHARS].rstrip(" ")
    return text or fallback


# ---------------------------------------------------------------------- bounded reads
def read_regular_bytes(path: Path, *, what: str, max_bytes: int, error: type[VitkitError]) -> bytes:
    """The bytes of ``path``, refused with ``error`` naming it unless it is a regular file of at most
    ``max_bytes`` (a FIFO would block forever, /dev/zero would read until memory runs out)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens without waiting for a writer
    except OSError as exc:
        raise error(f"Cannot open {what} {str(path)!r}: {exc.strerror or exc}. Check the path.") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):  # checked on the descriptor: os.fdopen itself refuses a folder with an OSError
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
        raise error(f"{what.capitalize()} {str(path)!r} is {kind}, expected a regular file.")
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise error(f"{what.capitalize()} {str(path)!r} is {size:,} bytes, more than the {max_bytes:,} allowed. "
                        "Check that it is the right file.")
        try:
            return f.read(min(size, max_bytes) + 1)[:max_bytes]  # its size, not the limit: no 1 GB buffer up front
        except OSError as exc:
            raise error(f"Cannot read {what} {str(path)!r}: {exc.strerror or exc}.") from None


def parse_json(text: str | bytes, source: str, *, error: type[VitkitError], fix: str) -> Any:
    """JSON, every failure (bad syntax, bad UTF-8, nesting too deep, NaN/Infinity) raised as ``error``
    naming ``source``; ``fix`` says what to do."""
    def no_constant(name: str) -> None:
        raise ValueError(f"{name} is not a JSON number")

    try:
        return json.loads(text, parse_constant=no_constant)
    except RecursionError:
        raise error(f"{source}: JSON nested too deeply. {fix}") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise error(f"{source}: not valid JSON ({exc}). {fix}") from None


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete temporary files a killed process left half-written in ``folder`` (they never replaced anything)."""
    stale = [p for p in folder.glob(f".*{TEMP_SUFFIX}") if p.is_file()] if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
