"""Atomic file writes: a reader (or a killed run) never sees a half-written file."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import OutputError

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
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete temporary files a killed process left half-written in ``folder`` (they never replaced anything)."""
    stale = [p for p in folder.glob(f".*{TEMP_SUFFIX}") if p.is_file()] if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
