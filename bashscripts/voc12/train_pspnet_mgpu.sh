#!/bin/bash
# Two-stage baseline PSPNet pipeline on PASCAL VOC 2012 as the original bashscripts/voc12/train_pspnet_mgpu.sh:
# stage 1 on train+ from the ImageNet ResNet-101, sliding-window inference and benchmark; stage 2 on train from
# stage 1, multi-scale + flip inference and benchmark. Usage (from the repository root): DATAROOT=/path/to/data bash
# bashscripts/voc12/train_pspnet_mgpu.sh
MODE=baseline
NUM_GPU=4
BATCH_SIZE=16
# The original train_mgpu.py: each tower's mean loss weighted by its share of the batch, new convolutions
# MSRA-uniform (LOSS_REDUCTION=global_mean gives the single-device loss of the whole batch instead).
LOSS_REDUCTION=${LOSS_REDUCTION:-tower_mean}
KERNEL_INITIALIZER=${KERNEL_INITIALIZER:-msra_uniform}
TRAIN_INPUT_SIZE=480,480
SNAPSHOT_DIR=${SNAPSHOT_DIR:-snapshots/voc12/pspnet/p480_bs16_lr1e-3_it30k}
source "$(dirname "$0")/../lib/voc12.sh"
