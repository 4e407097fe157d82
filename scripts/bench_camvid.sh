#!/usr/bin/env bash
# The CamVid CPU benchmark: experiment=camvid_cpu on SegNet's train split, scored on val, against
# the majority-class baseline that the validation table prints.
#   scripts/bench_camvid.sh [data.root=/path/CamVid] [overrides...]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 WANDB_MODE=offline NO_ALBUMENTATIONS_UPDATE=1
/usr/bin/time -f "camvid_cpu: wall %e s, peak RSS %M KB" .venv/bin/segtrain experiment=camvid_cpu \
  data.root="${CAMVID_ROOT:-../shared/data/camvid}" "$@"
