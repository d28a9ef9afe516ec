#!/bin/bash
# The VOC two-stage AAF pipeline on a generated synthetic VOC set with a reduced PSPNet (CPU-friendly).
# Sourced by bashscripts/synthetic/train_pspnet*.sh, which set MODE. Override any variable from the environment,
# e.g. NUM_STEPS=50 SYNTHETIC_ROOT=/tmp/voc bash bashscripts/synthetic/train_pspnet_aaf.sh
set -e
PYTHON=${PYTHON:-python3}
SYNTHETIC_ROOT=${SYNTHETIC_ROOT:-runs/synthetic/voc}
NUM_IMAGES=${NUM_IMAGES:-200}
if [ ! -f "${SYNTHETIC_ROOT}/dataset/voc12/val.txt" ]; then
  ${PYTHON} -m common.data.synthetic --layout voc --out "${SYNTHETIC_ROOT}" --num-images "${NUM_IMAGES}" --seed 0
fi
NUM_GPU=${NUM_GPU:-1}
BATCH_SIZE=${BATCH_SIZE:-8}
TRAIN_INPUT_SIZE=96,96
NUM_STEPS=${NUM_STEPS:-300}
NUM_CLASSES=21
LR_1=${LR_1:-1e-2}
LR_2=${LR_2:-1e-3}
INFERENCE_INPUT_SIZE=96,96
INFERENCE_STRIDES=64,64
DATA_DIR=${SYNTHETIC_ROOT}/VOCdevkit/
TRAIN_LIST_1=${SYNTHETIC_ROOT}/dataset/voc12/train+.txt
TRAIN_LIST_2=${SYNTHETIC_ROOT}/dataset/voc12/train.txt
TEST_LIST=${SYNTHETIC_ROOT}/dataset/voc12/val.txt
GT_DIR=${SYNTHETIC_ROOT}/VOCdevkit/VOC2012/segcls/
COLORMAP=voc
RESTORE_FROM=${RESTORE_FROM:-}  # no ImageNet weights for the reduced network: stage 1 starts from scratch
SNAPSHOT_DIR=${SNAPSHOT_DIR:-runs/synthetic/snapshots/${MODE}}
EXTRA_MODEL_FLAGS=${EXTRA_MODEL_FLAGS:---backbone-filters 8,16,32,64 --backbone-blocks 1,1,1,1 --psp-channels 32 --bn-decay 0.99}
EXTRA_TRAIN_FLAGS=${EXTRA_TRAIN_FLAGS:-${EXTRA_MODEL_FLAGS}}

source "$(dirname "${BASH_SOURCE[0]}")/aaf_pipeline.sh"
aaf_run_pipeline
