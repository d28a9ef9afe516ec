#!/bin/bash
# PASCAL VOC 2012 settings shared by the original SegSort pipelines (bashscripts/voc12/train_segsort*.sh).
# Everything can be overridden from the environment (DATAROOT, RESTORE_FROM, NUM_STEPS_1, ...).
DATAROOT=${DATAROOT:-/path/to/data}
DATA_DIR=${DATAROOT}/VOCdevkit/
TRAIN_LIST_1=${TRAIN_LIST_1:-dataset/voc12/train+.txt}
INFERENCE_SPLIT=${INFERENCE_SPLIT:-val}
TEST_LIST=dataset/voc12/${INFERENCE_SPLIT}.txt
GT_DIR=${DATAROOT}/VOCdevkit/VOC2012/segcls/
INFERENCE_INPUT_SIZE=480,480
INFERENCE_STRIDES=320,320
SINGLE_INPUT_SIZE=720,720
RESTORE_FROM=${RESTORE_FROM:-snapshots/imagenet/trained/resnet_v1_101.ckpt}
source "$(dirname "${BASH_SOURCE[0]}")/segsort_pipeline.sh"
