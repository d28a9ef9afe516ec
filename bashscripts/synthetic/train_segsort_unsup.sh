#!/bin/bash
# bashscripts/voc12/train_segsort_unsup.sh on synthetic VOC data, with SLIC over-segmentations written by
# segsort.overseg into their own directory (--hed_dir, the Q-S2 fix) instead of MATLAB HED-owt-ucm masks.
KNN_K=${KNN_K:-15}
SNAPSHOT_DIR=${SNAPSHOT_DIR:-runs/synthetic/snapshots/unsup_segsort}
IS_OVERSEG=${IS_OVERSEG:-1}
OVERSEG_METHOD=${OVERSEG_METHOD:-slic}
HED_DIR=${HED_DIR:-${SNAPSHOT_DIR}/hed}
source "$(dirname "$0")/../lib/synthetic_segsort.sh"
segsort_run_unsup_pipeline
