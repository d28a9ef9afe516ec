#!/bin/bash
# Two-stage affinity PSPNet pipeline on PASCAL VOC 2012 (4 GPU(s), batch 16, crop 480), as the original
# bashscripts/voc12/train_pspnet_affinity_mgpu.sh: stage 1 on train+ from ImageNet ResNet-101, stage 2 on train from stage 1.
# Usage (from the repository root): DATAROOT=/path/to/data bash bashscripts/voc12/train_pspnet_affinity_mgpu.sh
MODE=affinity
NUM_GPU=4
BATCH_SIZE=16
TRAIN_INPUT_SIZE=480,480
NUM_STEPS=${NUM_STEPS:-30000}
NUM_CLASSES=21
LR_1=1e-3
LR_2=1e-4
INFERENCE_INPUT_SIZE=480,480
INFERENCE_STRIDES=320,320
INFERENCE_SPLIT=${INFERENCE_SPLIT:-val}
DATAROOT=${DATAROOT:-/path/to/data}
DATA_DIR=${DATAROOT}/VOCdevkit/
TRAIN_LIST_1=dataset/voc12/train+.txt
TRAIN_LIST_2=dataset/voc12/train.txt
TEST_LIST=dataset/voc12/${INFERENCE_SPLIT}.txt
GT_DIR=${DATAROOT}/VOCdevkit/VOC2012/segcls/
COLORMAP=voc
RESTORE_FROM=${RESTORE_FROM:-snapshots/imagenet/trained/resnet_v1_101.ckpt}
SNAPSHOT_DIR=${SNAPSHOT_DIR:-snapshots/voc12/pspnet_affinity/p480_bs16_lr1e-3_kld3e0_it30k}

source "$(dirname "$0")/../lib/aaf_pipeline.sh"
aaf_run_pipeline
