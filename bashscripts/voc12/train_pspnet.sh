#!/bin/bash
# Two-stage baseline PSPNet pipeline on PASCAL VOC 2012 as the original bashscripts/voc12/train_pspnet.sh: stage 1
# on train+ from the ImageNet ResNet-101, sliding-window inference and benchmark; stage 2 on train from stage 1,
# multi-scale + flip inference and benchmark. Usage (from the repository root): DATAROOT=/path/to/data bash
# bashscripts/voc12/train_pspnet.sh
MODE=baseline
NUM_GPU=1
BATCH_SIZE=8
TRAIN_INPUT_SIZE=336,336
SNAPSHOT_DIR=${SNAPSHOT_DIR:-snapshots/voc12/pspnet/p336_bs8_lr1e-3_it30k}
source "$(dirname "$0")/../lib/voc12.sh"
