#!/bin/bash
# bashscripts/voc12/train_segsort.sh on generated synthetic VOC data (reduced PSPNet, CPU).
# Usage (from the repository root): bash bashscripts/synthetic/train_segsort.sh
NUM_STEPS_2=${NUM_STEPS_2:-150}
LR_2=${LR_2:-1e-3}
KNN_K=${KNN_K:-15}
TRAIN_LIST_2=${TRAIN_LIST_2:-${SYNTHETIC_ROOT:-runs/synthetic/voc}/dataset/voc12/train.txt}
SNAPSHOT_DIR=${SNAPSHOT_DIR:-runs/synthetic/snapshots/segsort}
source "$(dirname "$0")/../lib/synthetic_segsort.sh"
segsort_run_pipeline
