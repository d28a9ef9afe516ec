#!/bin/bash
# A PSPNet trained on Cityscapes (bashscripts/cityscapes/*.sh) tested on GTA5: list + trainId ground truth, multi-scale
# sliding-window inference at the Cityscapes settings (720,720 windows, strides 480,480), mIoU over the 19 classes.
# Usage (from the repository root): DATAROOT=/path/to/data RESTORE_FROM=snapshots/.../model.ckpt-90000 \
#   bash bashscripts/gta5/evaluate_cityscapes_model.sh
DATAROOT=${DATAROOT:-/path/to/data}
GTA5_ROOT=${GTA5_ROOT:-${DATAROOT}/GTA5}
RESTORE_FROM=${RESTORE_FROM:-snapshots/cityscapes/pspnet_aaf/p720_bs8_lr1e-3_kld3e0_it90k/model.ckpt-90000}
SAVE_DIR=${SAVE_DIR:-$(dirname "${RESTORE_FROM}")/results/gta5}
source "$(dirname "$0")/../lib/gta5.sh"
gta5_evaluate
