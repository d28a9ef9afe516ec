#!/bin/bash
# Synthetic-VOC settings of the SegSort pipelines (reduced PSPNet, CPU, minutes); sourced by
# bashscripts/synthetic/train_segsort*.sh. Override any variable from the environment, e.g.
# NUM_STEPS_1=50 SYNTHETIC_ROOT=/tmp/voc bash bashscripts/synthetic/train_segsort.sh
PYTHON=${PYTHON:-python3}
SYNTHETIC_ROOT=${SYNTHETIC_ROOT:-runs/synthetic/voc}
NUM_IMAGES=${NUM_IMAGES:-200}
if [ ! -f "${SYNTHETIC_ROOT}/dataset/voc12/val.txt" ]; then
  ${PYTHON} -m common.data.synthetic --layout voc --out "${SYNTHETIC_ROOT}" --num-images "${NUM_IMAGES}" --seed 0
fi
DATA_DIR=${SYNTHETIC_ROOT}/VOCdevkit/
TRAIN_LIST_1=${SYNTHETIC_ROOT}/dataset/voc12/train+.txt
TEST_LIST=${SYNTHETIC_ROOT}/dataset/voc12/val.txt
GT_DIR=${SYNTHETIC_ROOT}/VOCdevkit/VOC2012/segcls/
BATCH_SIZE=${BATCH_SIZE:-8}
TRAIN_INPUT_SIZE=96,96
INFERENCE_INPUT_SIZE=96,96
INFERENCE_STRIDES=64,64
SINGLE_INPUT_SIZE=192,192
NUM_STEPS_1=${NUM_STEPS_1:-300}
LR_1=${LR_1:-1e-2}
RESTORE_FROM=${RESTORE_FROM:-}  # no ImageNet weights for the reduced network: stage 1 starts from scratch
EXTRA_MODEL_FLAGS=${EXTRA_MODEL_FLAGS:---backbone_filters 8,16,32,64 --backbone_blocks 1,1,1,1 --psp_channels 32 --bn_decay 0.99}
EXTRA_TRAIN_FLAGS=${EXTRA_TRAIN_FLAGS:-${EXTRA_MODEL_FLAGS}}
source "$(dirname "${BASH_SOURCE[0]}")/segsort_pipeline.sh"
