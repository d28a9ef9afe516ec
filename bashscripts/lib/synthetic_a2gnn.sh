#!/bin/bash
# Settings of the synthetic A2GNN pipelines (bashscripts/synthetic/a2gnn_*.sh): a generated VOC set with its seed
# folders, a reduced ResNet-38 trained from scratch, reduced GNN schedules and a reduced DeepLab, on CPU.
# The caller sets SUPERVISION and SEED_FOLDER; everything else can be overridden from the environment.
set -e
PYTHON=${PYTHON:-python3}
export TF_ENABLE_ONEDNN_OPTS=${TF_ENABLE_ONEDNN_OPTS:-0}
SYNTHETIC_ROOT=${SYNTHETIC_ROOT:-runs/synthetic/a2gnn_data}
NUM_IMAGES=${NUM_IMAGES:-24}
SIZE=${SIZE:-192}                                   # 24 x 24 GNN nodes: smaller grids lose small objects
if [ ! -d "${SYNTHETIC_ROOT}/data/Init_Label" ]; then
  ${PYTHON} -m common.data.synthetic --layout voc --out "${SYNTHETIC_ROOT}" --num_images "${NUM_IMAGES}" \
    --height "${SIZE}" --width "${SIZE}" --seed 0
fi
SUPERVISION=${SUPERVISION:?set SUPERVISION}
VOC12_ROOT=${SYNTHETIC_ROOT}/VOCdevkit/VOC2012
TRAIN_LIST=${SYNTHETIC_ROOT}/voc12/train_aug.txt
INFER_LIST=${SYNTHETIC_ROOT}/voc12/train_aug.txt
EVAL_LIST=${SYNTHETIC_ROOT}/voc12/val.txt
SEED_DIR=${SYNTHETIC_ROOT}/data/Init_Label/${SEED_FOLDER:?set SEED_FOLDER}
AFF_WEIGHTS=""                                      # no SEAM weights for the reduced trunk: from scratch
MODEL_FLAGS=${MODEL_FLAGS:---width_multiplier 0.0625}
AFF_FLAGS=${AFF_FLAGS:---crop_size ${SIZE} --batch_size 2 --max_epoches 10}
GNN_FLAGS=${GNN_FLAGS:---epochs 50}
OUT=${OUT:-runs/synthetic/a2gnn_${SUPERVISION}}
source "$(dirname "${BASH_SOURCE[0]}")/synthetic_deeplab.sh"
source "$(dirname "${BASH_SOURCE[0]}")/a2gnn_pipeline.sh"
a2gnn_run_pipeline
