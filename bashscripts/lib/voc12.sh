#!/bin/bash
# PASCAL VOC 2012 settings of the original AAF pipelines (bashscripts/voc12/*.sh), then the two-stage pipeline.
# The caller sets MODE, NUM_GPU, BATCH_SIZE, TRAIN_INPUT_SIZE and SNAPSHOT_DIR; everything here can be overridden
# from the environment (e.g. DATAROOT, NUM_STEPS, RESTORE_FROM, INFERENCE_SPLIT).
NUM_STEPS=${NUM_STEPS:-30000}
NUM_CLASSES=21
LR_1=${LR_1:-1e-3}
LR_2=${LR_2:-1e-4}
INFERENCE_INPUT_SIZE=480,480
INFERENCE_STRIDES=320,320
INFERENCE_SPLIT=${INFERENCE_SPLIT:-val}
DATAROOT=${DATAROOT:-/path/to/data}
DATA_DIR=${DATAROOT}/VOCdevkit/
TRAIN_LIST_1=${TRAIN_LIST_1:-dataset/voc12/train+.txt}
TRAIN_LIST_2=${TRAIN_LIST_2:-dataset/voc12/train.txt}
TEST_LIST=dataset/voc12/${INFERENCE_SPLIT}.txt
GT_DIR=${DATAROOT}/VOCdevkit/VOC2012/segcls/
COLORMAP=voc
RESTORE_FROM=${RESTORE_FROM:-snapshots/imagenet/trained/resnet_v1_101.ckpt}

source "$(dirname "${BASH_SOURCE[0]}")/aaf_pipeline.sh"
aaf_run_pipeline
