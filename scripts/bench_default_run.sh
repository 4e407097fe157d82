#!/usr/bin/env bash
# Wall time and peak resident memory of the default run (what `make train` trains).
#   scripts/bench_default_run.sh [overrides...]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 WANDB_MODE=offline NO_ALBUMENTATIONS_UPDATE=1
/usr/bin/time -f "default run: wall %e s, peak RSS %M KB" .venv/bin/segtrain "$@"
