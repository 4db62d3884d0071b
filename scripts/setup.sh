#!/usr/bin/env bash
# Create .venv (once) and install vitkit with its test extras, pinned to the CPU build of torch.
# Idempotent: a second run only re-checks the install.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.vitkit-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    # constraints.txt pins torch 2.13.0 (local CPU wheel) and torchvision 0.28.0: a bare `torch`
    # requirement would pull a multi-GB CUDA build.
    .venv/bin/python -m pip install -q -c constraints.txt torch==2.13.0
    .venv/bin/python -m pip install -q -c constraints.txt -e ".[test]"
    touch "$stamp"
fi
# torchvision (needed only by the test-only reference timm) is a CUDA build on PyPI: a start-up hook makes it
# importable on CPU torch (scripts/env/torchvision_cpu.py says how). It lives in .venv only, never in vitkit.
site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
printf '%s\nimport torchvision_cpu\n' "$PWD/scripts/env" > "$site/vitkit-dev-torchvision-cpu.pth"
# The page of `vitkit serve` is tested in a real browser: Debian's chromium (playwright drives it; its own browser
# download is not reachable here). Installed once, only where missing, only as root, without questions.
if [ ! -x /usr/lib/chromium/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
