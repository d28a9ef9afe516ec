#!/bin/bash
# Cityscapes settings of the original AAF pipelines (bashscripts/cityscapes/*.sh: 4 GPUs, batch 8, crop 720,
# one stage), then the pipeline. The caller sets MODE and SNAPSHOT_DIR. The original's undefined ${TEST_SPLIT}
# (Q-A10) is defined here (default val).
NUM_GPU=${NUM_GPU:-4}
# All original Cityscapes scripts are multi-GPU (train_mgpu.py): tower-weighted losses, MSRA-uniform new convolutions.
LOSS_REDUCTION=${LOSS_REDUCTION:-tower_mean}
KERNEL_INITIALIZER=${KERNEL_INITIALIZER:-msra_uniform}
BATCH_SIZE=${BATCH_SIZE:-8}
TRAIN_INPUT_SIZE=720,720
NUM_STEPS=${NUM_STEPS:-90000}
NUM_CLASSES=19
LR_1=${LR_1:-1e-3}
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

source "$(dirname "${BASH_SOURCE[0]}")/aaf_pipeline.sh"
aaf_run_pipeline
