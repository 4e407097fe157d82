#!/usr/bin/env bash
# segtrain's training throughput against a hand-written loop on one GPU (benchmarks/gpu.md):
# DeepLabV3+ ResNet-101 (OS 16), 512x512, batch 16, bf16, eager / channels_last / channels_last + compile.
#   scripts/bench_gpu.sh OUT_DIR [python]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-outputs/bench_gpu}
python=${2:-.venv/bin/python}
runs=${RUNS:-$out/runs}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 WANDB_MODE=offline NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1
common=(model=deeplabv3plus model.backbone.pretrained=false data=shapes data.dataset.image_size=512 "data.dataset.lengths={train:480,val:16,test:16}"
        data.batch_size=16 data.num_workers=0 trainer=gpu callbacks.progress_bar=null bench.steps=30 bench.warmup=10
        "paths.log_dir=$runs")
run() {
  local name=$1; shift
  echo "== $name: segtrain bench ${common[*]} $*"
  "$python" -m segtrain bench "${common[@]}" "$@" 2>&1 | tee "$out/$name.txt" | grep -E "device|images/s|throughput|error"
  cp "$(ls -t "$runs"/bench/*/bench.json | head -1)" "$out/$name.json"
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/device.txt"
"$python" -c "import torch, pytorch_lightning; print('torch', torch.__version__, 'lightning', pytorch_lightning.__version__)" \
  | tee -a "$out/device.txt"
run eager bench.rounds=2
run channels_last bench.rounds=2 runtime.channels_last=true
run compiled bench.rounds=1 runtime.channels_last=true runtime.compile.enable=true
