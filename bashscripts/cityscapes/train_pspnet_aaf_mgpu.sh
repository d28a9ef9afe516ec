#!/bin/bash
# One-stage aaf PSPNet pipeline on Cityscapes as the original bashscripts/cityscapes/train_pspnet_aaf_mgpu.sh
# (train, multi-scale + flip inference, benchmark). Usage (from the repository root): DATAROOT=/path/to/data bash
# bashscripts/cityscapes/train_pspnet_aaf_mgpu.sh
MODE=aaf
SNAPSHOT_DIR=${SNAPSHOT_DIR:-snapshots/cityscapes/pspnet_aaf/p720_bs8_lr1e-3_kld3e0_it90k}
source "$(dirname "$0")/../lib/cityscapes.sh"
