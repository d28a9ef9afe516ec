#!/bin/bash
# PSA on PASCAL VOC 2012 with the README's hyper-parameters (ResNet-38; NETWORK=vgg16 for VGG-16):
# train_cls (batch 16, 15 epochs, lr 0.1, crop 448, ImageNet init) -> infer_cls on train_aug (la alpha 4, ha 32)
# -> train_aff (batch 8, 8 epochs, from ImageNet) -> infer_aff on train (alpha 16, beta 8, logt 8) -> evaluation
# -> DeepLab on the random-walk labels (inference with CRF, benchmark on val).
# Usage (repository root): VOC12_ROOT=/data/VOCdevkit/VOC2012 bash bashscripts/voc12/psa_pipeline.sh
# Everything can be overridden from the environment (OUT, NETWORK, CLS_WEIGHTS, AFF_WEIGHTS, IS_* switches, ...).
VOC12_ROOT=${VOC12_ROOT:-/path/to/VOCdevkit/VOC2012}
NETWORK=${NETWORK:-resnet38}
if [ "${NETWORK}" = resnet38 ]; then
  IMAGENET=${IMAGENET:-ilsvrc-cls_rna-a1_cls1000_ep-0001.params}
else
  IMAGENET=${IMAGENET:-vgg16_20M.caffemodel}
fi
CLS_WEIGHTS=${CLS_WEIGHTS:-${IMAGENET}}
AFF_WEIGHTS=${AFF_WEIGHTS:-${IMAGENET}}
TRAIN_LIST=${TRAIN_LIST:-voc12/train_aug.txt}
INFER_LIST=${INFER_LIST:-voc12/train.txt}
EVAL_LIST=${EVAL_LIST:-voc12/val.txt}
CLS_LABELS=${CLS_LABELS:-voc12/cls_labels.npy}
OUT=${OUT:-runs/voc12/psa_${NETWORK}}
BATCH_CLS=16; BATCH_AFF=8; CROP=448; EPOCHS_CLS=15; EPOCHS_AFF=8; LR=0.1
ALPHA_LOW=4; ALPHA_HIGH=32; ALPHA_RW=16; BETA=8; LOGT=8
DEEPLAB_RESTORE_FROM=${DEEPLAB_RESTORE_FROM:-snapshots/imagenet/trained/resnet_v1_101.ckpt}
source "$(dirname "$0")/../lib/psa_pipeline.sh"
psa_run_pipeline
