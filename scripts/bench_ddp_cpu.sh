#!/usr/bin/env bash
# The default run (U-Net on the embedded shapes) in 1 process and as 2 DDP processes over gloo, on
# the same data and the same effective batch size (16 = 16 x 1 = 8 x 2): wall time and val mIoU.
#   scripts/bench_ddp_cpu.sh [overrides...]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 WANDB_MODE=offline NO_ALBUMENTATIONS_UPDATE=1
log_dir=$(mktemp -d)
common=(trainer.max_epochs=3 data.num_workers=1 callbacks.progress_bar=null paths.log_dir="$log_dir" "$@")
/usr/bin/time -f "1 process: wall %e s" .venv/bin/segtrain trainer=cpu data.batch_size=16 run_name=single \
  "${common[@]}" | grep "^mIoU"
/usr/bin/time -f "2 DDP processes (gloo): wall %e s" .venv/bin/segtrain trainer=ddp_cpu data.batch_size=8 \
  run_name=ddp "${common[@]}" | grep "^mIoU"
