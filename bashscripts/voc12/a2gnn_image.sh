#!/bin/bash
# A2GNN, image supervision on PASCAL VOC 2012 (the original README's commands), then DeepLab on the pseudo labels.
# Usage (repository root): VOC12_ROOT=/path/VOC2012 AFF_WEIGHTS=netWeights/resnet38_aff_SEAM.pth \
#   bash bashscripts/voc12/a2gnn_image.sh   (seeds: the authors' data/Init_Label/SEAM_Image)
set -e
SUPERVISION=image
VOC12_ROOT=${VOC12_ROOT:-/your/path/VOCdevkit/VOC2012}
TRAIN_LIST=${TRAIN_LIST:-voc12/train_aug.txt}
INFER_LIST=${INFER_LIST:-voc12/train_aug.txt}
EVAL_LIST=${EVAL_LIST:-voc12/val.txt}
SEED_DIR=${SEED_DIR:-./data/Init_Label/SEAM_Image}
AFF_SEED_DIR=${AFF_SEED_DIR:-./data/Init_Label/SEAM_Image}
AFF_WEIGHTS=${AFF_WEIGHTS:-./netWeights/resnet38_aff_SEAM.pth}
CAM_DIR=${CAM_DIR:-}                 # SEAM CAMs (infer_seam --out_cam) for --rw True; empty = --rw False
SEAM_WEIGHTS=${SEAM_WEIGHTS:-}       # resnet38_SEAM.pth: run infer_seam first (seeds -> SEED_DIR, CAMs -> CAM_DIR)
OUT=${OUT:-runs/voc12/a2gnn_image}
source "$(dirname "$0")/../lib/a2gnn_pipeline.sh"
a2gnn_run_pipeline
