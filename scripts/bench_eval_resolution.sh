#!/usr/bin/env bash
# What scoring at each image's own resolution costs a validation pass, against scoring at the size the
# val transforms give: one checkpoint evaluated both ways, twice each, on CamVid's val split.
#   scripts/bench_eval_resolution.sh CKPT [overrides...]
set -euo pipefail
ckpt=$(realpath "$1")
shift
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 WANDB_MODE=offline NO_ALBUMENTATIONS_UPDATE=1
for resolution in transformed original transformed original; do
  echo "== inference.score_resolution=$resolution"
  .venv/bin/segtrain eval ckpt="$ckpt" data.root="${CAMVID_ROOT:-../shared/data/camvid}" data.split=val \
    inference.score_resolution="$resolution" "$@" | grep -E "^mIoU|images/s"
done
