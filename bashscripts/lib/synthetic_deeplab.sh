#!/bin/bash
# Settings of the DeepLab stage (deeplab_stage.sh) on a generated synthetic VOC set: a reduced DeepLab trained
# from scratch on CPU. Sourced by the synthetic PSA and A2GNN pipelines after they set VOC12_ROOT; override any
# variable from the environment.
GT_DIR=${VOC12_ROOT}/SegmentationClassAug/
DEEPLAB_NUM_STEPS=${DEEPLAB_NUM_STEPS:-100}
DEEPLAB_BATCH_SIZE=${DEEPLAB_BATCH_SIZE:-8}
DEEPLAB_INPUT_SIZE=${DEEPLAB_INPUT_SIZE:-96,96}
DEEPLAB_LR=${DEEPLAB_LR:-1e-2}
DEEPLAB_RESTORE_FROM=""
DEEPLAB_INFERENCE_SIZE=96,96
DEEPLAB_INFERENCE_STRIDES=64,64
DEEPLAB_MODEL_FLAGS=${DEEPLAB_MODEL_FLAGS:---backbone-filters 8,16,32,64 --backbone-blocks 1,1,1,1 --bn-decay 0.99}
