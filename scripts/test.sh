#!/usr/bin/env bash
# Set up (if needed), then lint and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks
.venv/bin/lint-imports  # the one-way floors (pyproject.toml [tool.importlinter])
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
