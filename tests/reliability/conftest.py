"""The reliability corpus modules import each other by name; the run's table is printed at the end."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    from harness import RELIABILITY_TABLES

    for mode, summary in config.stash.get(RELIABILITY_TABLES, []):
        terminalreporter.section(f"reliability corpus ({mode})")
        terminalreporter.write_line(summary)
