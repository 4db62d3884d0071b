#!/usr/bin/env bash
# The main job: set up (if needed), fine-tune a small ViT on the bundled digits data, then predict
# a few held-out digits with the best checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT="${OUT:-runs/digits}"
.venv/bin/vitkit train --out "$OUT" --overwrite "$@"
.venv/bin/vitkit predict "$OUT"/samples/*.png --model "$OUT/best" --top-k 3
