#!/bin/bash
# One-stage affinity PSPNet pipeline on Cityscapes (4 GPUs, batch 8, crop 720), as the original
# bashscripts/cityscapes/train_pspnet_affinity_mgpu.sh, with the undefined ${TEST_SPLIT} of the original fixed (defaults to val).
# Usage (from the repository root): DATAROOT=/path/to/data bash bashscripts/cityscapes/train_pspnet_affinity_mgpu.sh
MODE=affinity
NUM_GPU=4
BATCH_SIZE=8
TRAIN_INPUT_SIZE=720,720
NUM_STEPS=${NUM_STEPS:-90000}
NUM_CLASSES=19
LR_1=1e-3
UPDATE_TB_EVERY=500
INFERENCE_INPUT_SIZE=720,720
INFERENCE_STRIDES=480,480
TEST_SPLIT=${TEST_SPLIT:-val}
DATAROOT=${DATAROOT:-/path/to/data}
DATA_DIR=${DATAROOT}/Cityscapes/
TRAIN_LIST_1=dataset/cityscapes/train.txt
TEST_LIST=dataset/cityscapes/${TEST_SPLIT}.txt
GT_DIR=${DATAROOT}/Cityscapes/gtFineId/${TEST_SPLIT}/all/
STRING_REPLACE=leftImg8bit,gtFineId_labelIds
COLORMAP=cityscapes
STAGE1_INFERENCE=msc
RESTORE_FROM=${RESTORE_FROM:-snapshots/imagenet/trained/resnet_v1_101.ckpt}
SNAPSHOT_DIR=${SNAPSHOT_DIR:-snapshots/cityscapes/pspnet_affinity/p720_bs8_lr1e-3_kld3e0_it90k}

source "$(dirname "$0")/../lib/aaf_pipeline.sh"
aaf_run_pipeline
