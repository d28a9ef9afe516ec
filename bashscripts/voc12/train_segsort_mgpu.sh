#!/bin/bash
# The original bashscripts/voc12/train_segsort_mgpu.sh: batch 16 at 480 crops over several GPUs (the original used
# 4 tower GPUs + 1 loss GPU; here every replica computes the loss on the all-gathered global batch, so NUM_GPU=4
# replaces those 5), stage 1 100k steps on train+ (lr 2e-3), stage 2 30k steps on train (lr 2e-4, checkpoints every
# 10k, classifier restored), multi-scale + flip inference with k=21.
NUM_GPU=${NUM_GPU:-4}
BATCH_SIZE=${BATCH_SIZE:-16}
TRAIN_INPUT_SIZE=480,480
NUM_STEPS_1=${NUM_STEPS_1:-100000}
NUM_STEPS_2=${NUM_STEPS_2:-30000}
SAVE_EVERY_2=${SAVE_EVERY_2:-10000}
LR_1=${LR_1:-2e-3}
LR_2=${LR_2:-2e-4}
KNN_K=${KNN_K:-21}
STAGE2_NOT_RESTORE_CLASSIFIER=0
IS_INFERENCE_1=${IS_INFERENCE_1:-1}
IS_INFERENCE_2=${IS_INFERENCE_2:-0}
IS_INFERENCE_MSC_2=${IS_INFERENCE_MSC_2:-1}
TRAIN_LIST_2=${TRAIN_LIST_2:-dataset/voc12/train.txt}
SNAPSHOT_DIR=${SNAPSHOT_DIR:-snapshots/voc12/segsort/segsort_mgpu_lr2e-3_it100k}
source "$(dirname "$0")/../lib/voc12_segsort.sh"
segsort_run_pipeline
