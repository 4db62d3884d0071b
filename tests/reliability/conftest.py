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


def pytest_configure(config: pytest.Config) -> None:
    from hypothesis import settings

    settings.register_profile("vitkit-fast", max_examples=150, deadline=None)
    settings.register_profile("vitkit-long", max_examples=3000, deadline=None)
    settings.load_profile("vitkit-long" if config.getoption("--long", False) else "vitkit-fast")
