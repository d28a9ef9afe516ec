#!/bin/bash
# One-stage baseline PSPNet pipeline on Cityscapes as the original bashscripts/cityscapes/train_pspnet_mgpu.sh
# (train, multi-scale + flip inference, benchmark). Usage (from the repository root): DATAROOT=/path/to/data bash
# bashscripts/cityscapes/train_pspnet_mgpu.sh
MODE=baseline
SNAPSHOT_DIR=${SNAPSHOT_DIR:-snapshots/cityscapes/pspnet/p720_bs8_lr1e-3_it90k}
source "$(dirname "$0")/../lib/cityscapes.sh"
