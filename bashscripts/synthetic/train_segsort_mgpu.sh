#!/bin/bash
# bashscripts/voc12/train_segsort_mgpu.sh on synthetic VOC data: every visible GPU a replica (the CPU alone without
# GPUs), loss on the all-gathered global batch of 16, stage 2 keeps the classifier, multi-scale inference with k=21.
NUM_GPU=${NUM_GPU:-1}
BATCH_SIZE=${BATCH_SIZE:-16}
NUM_STEPS_2=${NUM_STEPS_2:-150}
LR_2=${LR_2:-1e-3}
KNN_K=${KNN_K:-21}
STAGE2_NOT_RESTORE_CLASSIFIER=0
IS_INFERENCE_2=${IS_INFERENCE_2:-0}
IS_INFERENCE_MSC_2=${IS_INFERENCE_MSC_2:-1}
TRAIN_LIST_2=${TRAIN_LIST_2:-${SYNTHETIC_ROOT:-runs/synthetic/voc}/dataset/voc12/train.txt}
SNAPSHOT_DIR=${SNAPSHOT_DIR:-runs/synthetic/snapshots/segsort_mgpu}
source "$(dirname "$0")/../lib/synthetic_segsort.sh"
segsort_run_pipeline
