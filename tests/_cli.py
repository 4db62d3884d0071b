"""Run the `vitkit` command in a subprocess, as a user's shell does (CLI behaviour tests)."""

from __future__ import annotations

import os
import subprocess
import sys


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
            cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    """`python -m vitkit ARGS` with its exit code, stdout and stderr (text)."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run([sys.executable, "-m", "vitkit", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=cwd)
