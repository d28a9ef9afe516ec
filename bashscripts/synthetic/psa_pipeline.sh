#!/bin/bash
# The VOC PSA pipeline on a generated synthetic VOC set with a reduced ResNet-38 and a reduced DeepLab, on CPU.
# Usage (repository root): bash bashscripts/synthetic/psa_pipeline.sh   (override e.g. OUT, NUM_IMAGES, MAX_STEPS_*)
set -e
PYTHON=${PYTHON:-python3}
export TF_ENABLE_ONEDNN_OPTS=${TF_ENABLE_ONEDNN_OPTS:-0}
SYNTHETIC_ROOT=${SYNTHETIC_ROOT:-runs/synthetic/psa_data}
NUM_IMAGES=${NUM_IMAGES:-60}
SIZE=${SIZE:-112}
if [ ! -f "${SYNTHETIC_ROOT}/voc12/cls_labels.npy" ]; then
  ${PYTHON} -m common.data.synthetic --layout voc --out "${SYNTHETIC_ROOT}" --num_images "${NUM_IMAGES}" \
    --height "${SIZE}" --width "${SIZE}" --seed 0
fi
VOC12_ROOT=${SYNTHETIC_ROOT}/VOCdevkit/VOC2012
NETWORK=resnet38
TRAIN_LIST=${SYNTHETIC_ROOT}/voc12/train_aug.txt
INFER_LIST=${INFER_LIST:-${SYNTHETIC_ROOT}/voc12/train_aug.txt}
EVAL_LIST=${SYNTHETIC_ROOT}/voc12/val.txt
CLS_LABELS=${SYNTHETIC_ROOT}/voc12/cls_labels.npy
OUT=${OUT:-runs/synthetic/psa}
CLS_WEIGHTS=""                       # no ImageNet weights for the reduced network
AFF_WEIGHTS=${OUT}/resnet38_cls.npz  # AffinityNet starts from the trained classifier
MODEL_FLAGS=${MODEL_FLAGS:---width_multiplier 0.125}
BATCH_CLS=8; BATCH_AFF=8; CROP=${SIZE}; EPOCHS_CLS=1; EPOCHS_AFF=1; LR=0.1
MAX_STEPS_CLS=${MAX_STEPS_CLS:-120}; MAX_STEPS_AFF=${MAX_STEPS_AFF:-60}
# From scratch on small images: the quick start's settings (README, AffinityNet quick start)
CLS_FLAGS=${CLS_FLAGS:---bn_decay 0.9 --resize_long $((SIZE * 7 / 8)),$((SIZE * 9 / 8)) --nodropout --color_jitter 0.3,0.3,0.3,0 --intended_momentum --lr 0.01}
AFF_FLAGS=${AFF_FLAGS:---bn_decay 0.9 --nodropout}
ALPHA_LOW=4; ALPHA_HIGH=32; ALPHA_RW=16; BETA=8; LOGT=${LOGT:-8}
source "$(dirname "$0")/../lib/synthetic_deeplab.sh"
source "$(dirname "$0")/../lib/psa_pipeline.sh"
psa_run_pipeline
