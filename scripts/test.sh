#!/usr/bin/env bash
# Set up (if needed), then lint and run the test suite (extra arguments go to both pytest runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks
.venv/bin/lint-imports  # the one-way floors (pyproject.toml [tool.importlinter])
# Two pytest processes, each on about half of the files: one process that had loaded every reference library
# and runtime of the whole suite (timm, transformers, open_clip, ONNX Runtime, OpenVINO with NNCF, Ray, JAX)
# was killed by SIGSEGV late in the run, while every part of it passes on its own (see tests/conftest.py's
# _sound_signal_stack).
first=(tests/reliability $(ls tests/test_*.py | awk -F/ '$2 < "test_n"'))
second=($(ls tests/test_*.py | awk -F/ '$2 >= "test_n"'))
.venv/bin/python -m pytest -q -p no:cacheprovider "${first[@]}" "$@"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "${second[@]}" "$@"
