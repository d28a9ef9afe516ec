#!/bin/bash
# The Cityscapes -> GTA5 pipeline end to end on generated data (CPU, minutes): synthetic Cityscapes and GTA5 sets,
# a reduced PSPNet trained on the Cityscapes set (MODE baseline|affinity|aaf, default aaf), then tested on GTA5 as
# bashscripts/gta5/evaluate_cityscapes_model.sh does. Override any variable from the environment, e.g.
# NUM_STEPS=20 SYNTHETIC_ROOT=/tmp/gta bash bashscripts/gta5/synthetic.sh
set -e
PYTHON=${PYTHON:-python3}
MODE=${MODE:-aaf}
SYNTHETIC_ROOT=${SYNTHETIC_ROOT:-runs/synthetic/gta5}
NUM_IMAGES=${NUM_IMAGES:-40}
IMAGE_HEIGHT=${IMAGE_HEIGHT:-96}
IMAGE_WIDTH=${IMAGE_WIDTH:-192}
for layout in cityscapes gta5; do
  if [ ! -d "${SYNTHETIC_ROOT}/${layout}/dataset" ]; then
    ${PYTHON} -m common.data.synthetic --layout ${layout} --out "${SYNTHETIC_ROOT}/${layout}" \
      --num-images "${NUM_IMAGES}" --seed 0 --height "${IMAGE_HEIGHT}" --width "${IMAGE_WIDTH}"
  fi
done
NUM_GPU=${NUM_GPU:-1}
BATCH_SIZE=${BATCH_SIZE:-8}
TRAIN_INPUT_SIZE=${TRAIN_INPUT_SIZE:-96,96}
NUM_STEPS=${NUM_STEPS:-300}
NUM_CLASSES=19
LR_1=${LR_1:-1e-2}
DATA_DIR=${SYNTHETIC_ROOT}/cityscapes/Cityscapes/
TRAIN_LIST_1=${SYNTHETIC_ROOT}/cityscapes/dataset/cityscapes/train.txt
TEST_LIST=${SYNTHETIC_ROOT}/cityscapes/dataset/cityscapes/val.txt
GT_DIR=${SYNTHETIC_ROOT}/cityscapes/Cityscapes/gtFineId/val/all/
COLORMAP=cityscapes
RESTORE_FROM=  # no ImageNet weights for the reduced network: train from scratch
SNAPSHOT_DIR=${SNAPSHOT_DIR:-runs/synthetic/gta5_snapshots/${MODE}}
EXTRA_MODEL_FLAGS=${EXTRA_MODEL_FLAGS:---backbone-filters 8,16,32,64 --backbone-blocks 1,1,1,1 --psp-channels 32 --bn-decay 0.99}
EXTRA_TRAIN_FLAGS=${EXTRA_TRAIN_FLAGS:-${EXTRA_MODEL_FLAGS}}
IS_INFERENCE_1=0
IS_BENCHMARK_1=0
source "$(dirname "$0")/../lib/aaf_pipeline.sh"
aaf_run_pipeline

GTA5_ROOT=${SYNTHETIC_ROOT}/gta5/GTA5
LIST_DIR=${SYNTHETIC_ROOT}/gta5
RESTORE_FROM=${SNAPSHOT_DIR}/model.ckpt-${NUM_STEPS}
SAVE_DIR=${SNAPSHOT_DIR}/results/gta5
INFERENCE=${INFERENCE:-single}
INFERENCE_INPUT_SIZE=${INFERENCE_INPUT_SIZE:-96,96}
INFERENCE_STRIDES=${INFERENCE_STRIDES:-64,64}
source "$(dirname "$0")/../lib/gta5.sh"
gta5_evaluate
