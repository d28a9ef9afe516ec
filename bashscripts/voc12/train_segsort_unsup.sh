#!/bin/bash
# The original bashscripts/voc12/train_segsort_unsup.sh: unsupervised SegSort on HED-owt-ucm over-segmentations
# (`label.replace('segcls', 'hed')`), batch 8, 336 crops, 10k steps on train+ (lr 2e-3), prototypes from the train+
# labels, multi-scale + flip kNN inference (k=15), benchmark.
# Without the MATLAB HED masks: IS_OVERSEG=1 HED_DIR=<dir> writes scikit-image substitutes (segsort.overseg) and
# trains on them (HED_DIR also fixes Q-S2: SBD lines of train+ would otherwise train on their GT masks).
BATCH_SIZE=${BATCH_SIZE:-8}
TRAIN_INPUT_SIZE=336,336
NUM_STEPS_1=${NUM_STEPS_1:-10000}
LR_1=${LR_1:-2e-3}
KNN_K=${KNN_K:-15}
SNAPSHOT_DIR=${SNAPSHOT_DIR:-snapshots/voc12/unsup_segsort/unsup_segsort_lr2e-3_it10k}
source "$(dirname "$0")/../lib/voc12_segsort.sh"
segsort_run_unsup_pipeline
