#!/usr/bin/env bash
# Zoo III on a CPU (benchmarks/models.md, benchmarks/referring.md). Each run's scores land in
# outputs/zoo3/<name>/val_metrics.json.
#   scripts/bench_zoo3.sh [name ...]      (default: every run)
# - lstm2d, reseg, graph_lstm: CamVid on experiment=camvid_cpu's recipe, from scratch (no ImageNet weights
#   offline, so ReSeg trains its VGG16 layers instead of freezing them), against the majority baseline;
# - referring, referring_expression_blind, referring_image_blind: task=referring on the embedded data, the
#   model and its two blind baselines with the same budget.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 WANDB_MODE=offline NO_ALBUMENTATIONS_UPDATE=1
EPOCHS="${EPOCHS:-4}"
CAMVID="experiment=camvid_cpu data.root=${CAMVID_ROOT:-../shared/data/camvid} trainer.max_epochs=$EPOCHS ~model.base_channels"
declare -A RUNS=(
  [lstm2d]="$CAMVID model=lstm2d"
  [reseg]="$CAMVID model=reseg model.backbone.pretrained=false +model.backbone.width=0.25 model.freeze_encoder=false"
  [graph_lstm]="$CAMVID model=graph_lstm model.backbone.pretrained=false +model.backbone.width=0.25 model.fc_channels=128 model.hidden=64 model.superpixels.n_segments=100"
  [referring]="task=referring"
  [referring_expression_blind]="task=referring model.blind=expression"
  [referring_image_blind]="task=referring model.blind=image"
)
for name in "${@:-lstm2d reseg graph_lstm referring referring_expression_blind referring_image_blind}"; do
  for run in $name; do
    # shellcheck disable=SC2086
    /usr/bin/time -f "$run: wall %e s, peak RSS %M KB" .venv/bin/segtrain ${RUNS[$run]} \
      hydra.run.dir="outputs/zoo3/$run" callbacks.progress_bar=null
  done
done
