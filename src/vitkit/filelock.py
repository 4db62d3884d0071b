"""An exclusive lock on a file that can never go stale: ``flock``, which the kernel drops when its owner dies.

Long jobs (``vitkit features``) hold one per output part; a run killed at any point, even in the middle of
a merge, leaves nothing that blocks the next run. The lock file names its owner (pid, host, start time) so
that a refusal can say who holds it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

logger = logging.getLogger(__name__)


class FileLock:
    """An exclusive ``flock`` on ``path`` whose file names the owner (pid, host, start time).

    The kernel releases it when the owner dies, so it can never go stale; a lock file that still names an
    owner when acquired was left by a killed process, which is logged. A clean release unlinks the file.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd

    @classmethod
    def try_acquire(cls, path: Path) -> FileLock | str:
        """The lock, or a description of the process holding it."""
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                owner = os.read(fd, 4096).decode("utf-8", "replace")
                os.close(fd)
                return _describe_owner(owner)
            try:  # the file may have been unlinked by the owner releasing it between our open and flock
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        left = os.read(fd, 4096).decode("utf-8", "replace")
        if left.strip():
            logger.warning("%s was left by a run that was killed (%s); its lock is no longer held, "
                           "so this run takes over.", path, _describe_owner(left))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        self.path.unlink(missing_ok=True)  # unlink while holding it, so a clean release leaves no file
        os.close(self.fd)


def _describe_owner(text: str) -> str:
    try:
        owner = json.loads(text)
        return f"pid {owner['pid']} on host {owner['host']}, started {owner['started']}"
    except (ValueError, TypeError, KeyError):
        return "an unknown process"
