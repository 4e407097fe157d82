#!/usr/bin/env bash
# Zoo II on CamVid, on a CPU: each system at small width from scratch on experiment=camvid_cpu's recipe,
# against the majority-class baseline (benchmarks/models.md). Each run's scores land in
# outputs/zoo2/<name>/val_metrics.json.
#   scripts/bench_zoo2_camvid.sh [name ...]      (default: every system)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 WANDB_MODE=offline NO_ALBUMENTATIONS_UPDATE=1
EPOCHS="${EPOCHS:-8}"
VGG="model.backbone.pretrained=false +model.backbone.width=0.25 model.fc_channels=128 optimizer.lr=0.001"
RESNET="model.backbone.name=resnet18 model.backbone.pretrained=false"
declare -A RUNS=(
  [attention_to_scale]="model=attention_to_scale $VGG model.attention_channels=64"
  [reverse_attention]="model=reverse_attention $VGG"
  [pan]="model=pan $RESNET model.channels=64"
  [danet]="model=danet $RESNET model.channels=64 inference.mode=whole"
  [dpn]="model=dpn $VGG"
  [pan_product]="model=pan $RESNET model.channels=64 adversarial=product adversarial.weight=0.1 adversarial.width=0.25"
)
for name in "${@:-attention_to_scale reverse_attention pan danet dpn pan_product}"; do
  for run in $name; do
    # shellcheck disable=SC2086
    /usr/bin/time -f "$run: wall %e s, peak RSS %M KB" .venv/bin/segtrain experiment=camvid_cpu \
      data.root="${CAMVID_ROOT:-../shared/data/camvid}" trainer.max_epochs="$EPOCHS" \
      hydra.run.dir="outputs/zoo2/$run" "~model.base_channels" ${RUNS[$run]}
  done
done
