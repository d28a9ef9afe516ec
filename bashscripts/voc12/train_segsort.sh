#!/bin/bash
# The original bashscripts/voc12/train_segsort.sh: supervised SegSort, PSPNet ResNet-101, one GPU, batch 8, 336 crops;
# stage 1 on train+ (30k steps, lr 2e-3), prototypes + single-scale kNN inference (720, k=15) + benchmark; stage 2 on
# train (30k steps, lr 2e-4, classifier re-initialised as the original, Q-S6), prototypes, single-scale then
# multi-scale + flip inference into the same directory (Q-S13), benchmark.
BATCH_SIZE=${BATCH_SIZE:-8}
TRAIN_INPUT_SIZE=336,336
NUM_STEPS_1=${NUM_STEPS_1:-30000}
NUM_STEPS_2=${NUM_STEPS_2:-30000}
LR_1=${LR_1:-2e-3}
LR_2=${LR_2:-2e-4}
KNN_K=${KNN_K:-15}
TRAIN_LIST_2=${TRAIN_LIST_2:-dataset/voc12/train.txt}
SNAPSHOT_DIR=${SNAPSHOT_DIR:-snapshots/voc12/segsort/segsort_lr2e-3_it30000}
source "$(dirname "$0")/../lib/voc12_segsort.sh"
segsort_run_pipeline
