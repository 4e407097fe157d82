#!/usr/bin/env bash
# Issue 27's GPU checks as one run of at most ~10 minutes (benchmarks/gpu.md): segtrain against the
# hand-written loop (eager, channels_last, compiled, and the compiled path with its recompile and
# graph-break logs and with static shapes), CamVid JPEG training with SM utilisation sampled by nvidia-smi
# and launch to first step, eval throughput (whole, slide, flip), Mask R-CNN against the hand-written loop,
# and DDP over NCCL for 2 epochs, then resumed.
#
#   scripts/gpu_check.sh OUT_DIR            on the GPU machine
#   scripts/gpu_check.sh OUT_DIR tiny       the same steps on CPU at toy sizes (checks the script itself)
#
# Every step writes its command, stdout, stderr and any bench.json / metrics under OUT_DIR/<step>/, has its
# own time limit, and a failure is recorded in OUT_DIR/steps.tsv (step, exit code, seconds) before the next
# step runs: one failing step never costs the others. The whole run stops at BUDGET seconds (default 570,
# inside the device's 10 minutes a command): a step that would start later is recorded as skipped.
set -u
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:?usage: scripts/gpu_check.sh OUT_DIR [tiny]}")
mode=${2:-gpu}
python=${PYTHON:-.venv/bin/python}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 WANDB_MODE=offline NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1
printf 'step\texit\tseconds\n' > "$out/steps.tsv"

if [[ $mode == tiny ]]; then
  shapes=(data.dataset.image_size=64 "data.dataset.lengths={train:16,val:4,test:4}" data.batch_size=4)
  timing=(model.backbone.name=resnet18 model.backbone.multi_grid=null bench.steps=4 bench.warmup=1 bench.rounds=1)
  device=(trainer=cpu); limit=120; camvid_size=64; epochs_flag="trainer.max_epochs=1"; ddp=(trainer=ddp_cpu)
  detector=(model.backbone.name=resnet18 model.fpn_channels=32 model.representation_size=64 model.mask_channels=32
            model.min_size=64 model.max_size=96)
else
  shapes=(data.dataset.image_size=512 "data.dataset.lengths={train:480,val:16,test:16}" data.batch_size=16)
  timing=(bench.steps=30 bench.warmup=10 bench.rounds=1)
  device=(trainer=gpu); limit=0; camvid_size=0; epochs_flag="trainer.max_steps=300"; ddp=(trainer=ddp trainer.devices=-1)
  detector=()
fi
common=(data.num_workers=0 callbacks.progress_bar=null "paths.log_dir=$out/runs")
deadline=$((SECONDS + ${BUDGET:-$([[ $mode == tiny ]] && echo 1800 || echo 570)}))

# step NAME SECONDS COMMAND...: runs COMMAND in OUT_DIR/NAME with a time limit (tiny: $limit for every step).
step() {
  local name=$1 seconds=$2; shift 2
  [[ $limit -gt 0 ]] && seconds=$limit
  local remaining=$((deadline - SECONDS))
  if [[ $remaining -lt 15 ]]; then
    printf '%s\tskipped\t0\n' "$name" >> "$out/steps.tsv"
    return
  fi
  [[ $seconds -gt $remaining ]] && seconds=$remaining
  mkdir -p "$out/$name"
  printf '%q ' "$@" > "$out/$name/command.txt"
  local start=$SECONDS
  timeout --kill-after=10 "$seconds" "$@" > "$out/$name/stdout.txt" 2> "$out/$name/stderr.txt"
  local code=$?
  printf '%s\t%s\t%s\n' "$name" "$code" "$((SECONDS - start))" >> "$out/steps.tsv"
  echo "== $name: exit $code in $((SECONDS - start)) s"
}

# The bench.json step $1 wrote (none when it failed before writing one), copied into its folder.
keep() {
  [[ -d $out/$1 ]] || return 0
  find "$out/runs/bench" -name bench.json -newer "$out/$1/command.txt" -exec cp {} "$out/$1/" \; 2>/dev/null
}

segtrain=("$python" -m segtrain)
bench=("${segtrain[@]}" bench model=deeplabv3plus model.backbone.pretrained=false data=shapes "${shapes[@]}" "${timing[@]}"
       "${device[@]}" "${common[@]}")

step environment 30 bash -c "nvidia-smi || echo 'no nvidia-smi'; $python -c 'import torch, pytorch_lightning as pl; \
print(\"torch\", torch.__version__, \"lightning\", pl.__version__, \"cuda\", torch.cuda.is_available())'"

step bench_eager 90 "${bench[@]}"; keep bench_eager
step bench_channels_last 90 "${bench[@]}" runtime.channels_last=true
keep bench_channels_last
# The compiled path (0.65x of the hand-written compiled loop on the H200): its recompiles and graph breaks.
step bench_compiled 150 env TORCH_LOGS=recompiles,graph_breaks "${bench[@]}" runtime.channels_last=true \
  runtime.compile.enable=true bench.compile_reference=true
keep bench_compiled
step bench_compiled_static 90 "${bench[@]}" runtime.channels_last=true runtime.compile.enable=true \
  runtime.compile.dynamic=false bench.compile_reference=true
keep bench_compiled_static

# CamVid as JPEGs on local disk (images/{train,val}/*.jpg, masks as published), then a real-data run with
# nvidia-smi sampling SM utilisation every 200 ms.
camvid=$out/camvid_jpeg
step camvid_jpeg 60 "$python" - "$camvid" "$camvid_size" <<'EOF'
import sys
from pathlib import Path
from PIL import Image
target, size = Path(sys.argv[1]), int(sys.argv[2])
source = Path("../shared/data/camvid")
for split in ("train", "val"):
    images = sorted((source / split).glob("*.png"))[: 8 if size else None]
    for kind in ("images", "masks"):
        (target / kind / split).mkdir(parents=True, exist_ok=True)
    for path in images:
        image, mask = Image.open(path).convert("RGB"), Image.open(source / f"{split}annot" / path.name)
        if size:
            image, mask = image.resize((size, size)), mask.resize((size, size), Image.NEAREST)
        image.save(target / "images" / split / f"{path.stem}.jpg", quality=95)
        mask.save(target / "masks" / split / path.name)
print(target)
EOF
camvid_data=(data=folder "data.root=$camvid" "data.classes=[sky,building,pole,road,pavement,tree,sign,fence,car,pedestrian,bicyclist]"
             "data.label_map={11:255}" model=deeplabv3plus model.backbone.pretrained=false trainer.limit_val_batches=0
             callbacks.progress_bar=null "paths.log_dir=$out/runs")
if [[ $mode == tiny ]]; then
  camvid_data+=(data.batch_size=2 data.crop_size=[32,32] data.num_workers=0 model.backbone.name=resnet18
                model.backbone.multi_grid=null)
else
  camvid_data+=(data.batch_size=16 data.crop_size=[360,480] model.backbone.name=resnet50)
fi
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -lms 200 > "$out/sm_utilisation.csv" &
  sampler=$!
fi
step camvid_train 120 "${segtrain[@]}" "${camvid_data[@]}" "${device[@]}" "$epochs_flag" "hydra.run.dir=$out/camvid_train/run"
[[ -n ${sampler:-} ]] && kill "$sampler"
ckpt=$out/camvid_train/run/checkpoints/last.ckpt
for inference in whole slide flip; do
  case $inference in
    whole) flags=(inference.mode=whole) ;;
    slide) flags=(inference.mode=slide inference.crop_size=[32,32]); [[ $mode == tiny ]] || flags=(inference.mode=slide inference.crop_size=[360,480]) ;;
    flip) flags=(inference.flip=true) ;;
  esac
  step "eval_$inference" 60 "${segtrain[@]}" eval "ckpt=$ckpt" "${flags[@]}" "hydra.run.dir=$out/eval_$inference/run"
done

# Mask R-CNN on CamVid's cars and pedestrians as instances, against the hand-written loop.
step camvid_instances 60 "$python" scripts/labels_to_coco.py --images "$camvid/images/train" \
  --labels "$camvid/masks/train" --categories 8:car,9:pedestrian --min-area 20 --output "$camvid/annotations/train.json"
step mask_rcnn 90 "${segtrain[@]}" bench task=instance model=mask_rcnn model.backbone.pretrained=false data=instances_folder \
  "data.root=$camvid" data.image_dir=images/train "data.annotation_file=annotations/train.json" data.split=train \
  "${detector[@]}" "${device[@]}" "${common[@]}" bench.steps=10 bench.warmup=2 bench.rounds=1
keep mask_rcnn

step ddp_train 90 "${segtrain[@]}" "${shapes[@]}" "${ddp[@]}" model=unet_small trainer.max_epochs=2 \
  "${common[@]}" "hydra.run.dir=$out/ddp_train/run"
step ddp_resume 60 "${segtrain[@]}" "${shapes[@]}" "${ddp[@]}" model=unet_small trainer.max_epochs=3 \
  "${common[@]}" "resume=$out/ddp_train/run/checkpoints/last.ckpt" "hydra.run.dir=$out/ddp_resume/run"

column -t "$out/steps.tsv"
