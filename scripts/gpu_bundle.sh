#!/usr/bin/env bash
# What scripts/gpu_check.sh needs on the GPU machine that its image lacks, gathered here into .gpu/ (ignored by
# git, carried by the device tool): wheels of segtrain's dependencies missing there (the image has torch,
# Lightning, torchmetrics, timm, OpenCV, SciPy; not Hydra, OmegaConf, albumentations or pycocotools), for its
# Python 3.12, and CamVid as JPEGs (scripts/camvid_jpeg.py), since ../shared does not travel.
#
#   scripts/gpu_bundle.sh [CAMVID_ROOT]      then, with the device tool, carry [".gpu"] and run:
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/wheels/*.whl \
#     && PYTHONPATH=/tmp/site PYTHON=python3 CAMVID_JPEG=.gpu/camvid_jpeg ARCHIVE=$OUT/gpu_check.tgz \
#        scripts/gpu_check.sh /tmp/gpu_check
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
wheels=.gpu/wheels
rm -rf "$wheels" && mkdir -p "$wheels"
# The versions this project's venv runs, so that the GPU runs the code the tests passed on.
pinned=$("$python" -m pip freeze 2>/dev/null | grep -i -E '^(hydra-core|omegaconf|albumentations|albucore|pydantic|pydantic[-_]core|annotated-types|typing[-_]inspection|typing[-_]extensions|simsimd|stringzilla|pycocotools)==' || true)
[[ -n $pinned ]] || { echo "gpu_bundle: no pinned versions from $python -m pip freeze; run make install" >&2; exit 1; }
binary=()
for requirement in $pinned; do binary+=("$requirement"); done
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$wheels" "${binary[@]}"
# OmegaConf's parser runtime is published as a source archive only: a pure-Python wheel built here serves.
antlr=$("$python" -m pip freeze | grep -i '^antlr4-python3-runtime==')
"$python" -m pip wheel -q --no-deps -w "$wheels" "$antlr"
ls "$wheels"
camvid=${1:-../shared/data/camvid}
[[ -d .gpu/camvid_jpeg/images ]] || "$python" scripts/camvid_jpeg.py "$camvid" .gpu/camvid_jpeg
du -sh .gpu/wheels .gpu/camvid_jpeg
