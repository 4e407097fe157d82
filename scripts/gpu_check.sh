#!/usr/bin/env bash
# Issue 27's GPU checks as one run of at most ~10 minutes (benchmarks/gpu.md): segtrain against the
# hand-written loop (eager, channels_last, compiled, and the compiled path with its recompile and
# graph-break logs, torch profiles of both loops, and with static shapes), CamVid JPEG training with SM
# utilisation sampled by nvidia-smi and launch to first step, eval throughput (whole, slide, flip), Mask R-CNN
# against the hand-written loop, and DDP over NCCL for 2 epochs, then resumed.
#
#   scripts/gpu_check.sh OUT_DIR            on the GPU machine (scripts/gpu_bundle.sh prepares what it needs)
#   scripts/gpu_check.sh OUT_DIR tiny       the same steps on CPU at toy sizes: every step runs (~5 minutes)
#   scripts/gpu_check.sh OUT_DIR dry        the GPU's command lines, each composed and validated by segtrain
#                                           (--cfg job) without running; the data steps run (CI, ~1 minute)
#
# Every step writes its command, stdout, stderr and any bench.json / profiles under OUT_DIR/<step>/, has its
# own time limit, and a failure is recorded in OUT_DIR/steps.tsv (step, exit code, seconds) before the next
# step runs: one failing step never costs the others. The whole run stops at BUDGET seconds (default 570,
# inside the device's 10 minutes a command): a step that would start later is recorded as skipped.
# CAMVID_JPEG: CamVid already as JPEGs (scripts/camvid_jpeg.py); otherwise made from CAMVID (default
# ../shared/data/camvid).
# ARCHIVE: a .tar.gz of OUT_DIR written at the end, less the images and checkpoints (the device returns files,
# not folders). STEPS: a comma-separated list of the steps to run (a later device session runs what the
# budget cut off), e.g. STEPS=camvid_train,eval_whole,eval_slide,eval_flip.
set -u
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:?usage: scripts/gpu_check.sh OUT_DIR [gpu|tiny|dry]}")
mode=${2:-gpu}
python=${PYTHON:-.venv/bin/python}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 WANDB_MODE=offline NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1
printf 'step\texit\tseconds\n' > "$out/steps.tsv"

case $mode in
tiny)
  shapes=(data.dataset.image_size=64 "data.dataset.lengths={train:16,val:4,test:4}" data.batch_size=4)
  timing=(model.backbone.name=resnet18 model.backbone.multi_grid=null bench.steps=4 bench.warmup=1 bench.rounds=1)
  device=(trainer=cpu); limit=120; profiled=bench.profile=2; camvid_size=64; epochs_flag="trainer.max_epochs=1"; ddp=(trainer=ddp_cpu)
  detector=(model.backbone.name=resnet18 model.fpn_channels=32 model.representation_size=64 model.mask_channels=32
            model.min_size=64 model.max_size=96)
  camvid_count=8 ;;
gpu|dry)
  shapes=(data.dataset.image_size=512 "data.dataset.lengths={train:480,val:16,test:16}" data.batch_size=16)
  timing=(bench.steps=30 bench.warmup=10 bench.rounds=1)
  device=(trainer=gpu); limit=0; profiled=bench.profile=3; camvid_size=0; epochs_flag="trainer.max_steps=300"; ddp=(trainer=ddp trainer.devices=-1)
  detector=(); camvid_count=$([[ $mode == dry ]] && echo 8 || echo 0) ;;
*)
  echo "scripts/gpu_check.sh: mode '$mode' is none of gpu, tiny, dry" >&2; exit 2 ;;
esac
common=(data.num_workers=0 callbacks.progress_bar=null "paths.log_dir=$out/runs")
deadline=$((SECONDS + ${BUDGET:-$([[ $mode == gpu ]] && echo 570 || echo 1800)}))

# step NAME SECONDS COMMAND...: runs COMMAND in OUT_DIR/NAME with a time limit (tiny: $limit for every step;
# dry: a segtrain command prints its composed config instead of running).
step() {
  local name=$1 seconds=$2; shift 2
  [[ -n ${STEPS:-} && ",$STEPS," != *",$name,"* ]] && return
  [[ $limit -gt 0 ]] && seconds=$limit
  [[ $mode == dry && ( " $* " == *" -m segtrain "* || " $* " == *"/compile_gap.py "* ) ]] && set -- "$@" --cfg job
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

# The bench.json and profiles step $1 wrote (none when it failed before writing them), copied into its folder.
keep() {
  [[ -d $out/$1 ]] || return 0
  find "$out/runs/bench" -newer "$out/$1/command.txt" -type f \
    \( -name bench.json -o -name 'profile_*.txt' -o -name 'trace_*.json.gz' \) -exec cp {} "$out/$1/" \; 2>/dev/null
}

segtrain=("$python" -m segtrain)
bench=("${segtrain[@]}" bench model=deeplabv3plus model.backbone.pretrained=false data=shapes "${shapes[@]}" "${timing[@]}"
       "${device[@]}" "${common[@]}")

step environment 30 bash -c "nvidia-smi || echo 'no nvidia-smi'; $python -c 'import torch, pytorch_lightning as pl; \
print(\"torch\", torch.__version__, \"lightning\", pl.__version__, \"cuda\", torch.cuda.is_available())'"

# The compile gap first (0.65x of the hand-written compiled loop on the H200): each candidate the issue names
# timed as one change to either loop (scripts/compile_gap.py), with both loops' profiles (profile_plain.txt,
# profile_segtrain.txt: operators and kernels side by side) and torch.compile's recompiles and graph breaks.
step compile_gap 300 env TORCH_LOGS=recompiles,graph_breaks "$python" scripts/compile_gap.py "$out/compile_gap" \
  "${bench[@]:4}" runtime.channels_last=true runtime.compile.enable=true "$profiled"
step bench_channels_last 90 "${bench[@]}" runtime.channels_last=true "$profiled"
keep bench_channels_last

# CamVid as JPEGs on local disk (images/{train,val}/*.jpg, masks as published), then a real-data run with
# nvidia-smi sampling SM utilisation every 200 ms.
camvid=${CAMVID_JPEG:-$out/camvid_jpeg}
if [[ -z ${CAMVID_JPEG:-} ]]; then
  step camvid_jpeg 120 "$python" scripts/camvid_jpeg.py "${CAMVID:-../shared/data/camvid}" "$camvid" \
    $([[ $camvid_size -gt 0 ]] && echo --size "$camvid_size") $([[ $camvid_count -gt 0 ]] && echo --count "$camvid_count")
fi
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

# segtrain bench's own rows, as time allows: NCHW eager, and the compiled path as bench reports it, dynamic
# shapes left to torch and static.
step bench_eager 90 "${bench[@]}"; keep bench_eager
step bench_compiled 150 "${bench[@]}" runtime.channels_last=true runtime.compile.enable=true bench.compile_reference=true
keep bench_compiled
step bench_compiled_static 90 "${bench[@]}" runtime.channels_last=true runtime.compile.enable=true \
  runtime.compile.dynamic=false bench.compile_reference=true
keep bench_compiled_static

column -t "$out/steps.tsv"
if [[ -n ${ARCHIVE:-} ]]; then
  tar -czf "$ARCHIVE" -C "$out" --exclude=camvid_jpeg --exclude='*.ckpt' --exclude=wandb . && echo "archive: $ARCHIVE"
fi
