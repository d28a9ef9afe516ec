#!/bin/bash
# Evaluation of a Cityscapes-trained model on GTA5 (the generalisation result of the AAF paper; the original ships no
# script for it). Sourced by bashscripts/gta5/*.sh. Steps: the GTA5 list and trainId ground truth
# (`common.data.datasets --gta5-root`: GTA5 labels hold Cityscapes labelIds, mapped to the 19 trainIds), sliding-window
# inference at the Cityscapes settings with the Cityscapes colour map, mIoU benchmark.
#
# Required: GTA5_ROOT (holding images/ and labels/), RESTORE_FROM (checkpoint of the Cityscapes model), SAVE_DIR.
# Optional: LIST_DIR (.; dataset/gta5/train.txt goes there), INFERENCE (msc as the Cityscapes pipelines | single),
#   INFERENCE_INPUT_SIZE (720,720), INFERENCE_STRIDES (480,480), EXTRA_MODEL_FLAGS (e.g. a reduced network).
set -e
PYTHON=${PYTHON:-python3}
LIST_DIR=${LIST_DIR:-.}
INFERENCE=${INFERENCE:-msc}
INFERENCE_INPUT_SIZE=${INFERENCE_INPUT_SIZE:-720,720}
INFERENCE_STRIDES=${INFERENCE_STRIDES:-480,480}

gta5_evaluate() {
  local program=aaf.inference msc_flags=()
  if [ "${INFERENCE}" = msc ]; then
    program=aaf.inference_msc
    msc_flags=(--flip-aug --scale-aug)
  fi
  ${PYTHON} -m common.data.datasets --gta5-root "${GTA5_ROOT}" --out-dir "${LIST_DIR}"
  ${PYTHON} -m ${program} \
    --data-dir "${GTA5_ROOT}/" --data-list "${LIST_DIR}/dataset/gta5/train.txt" \
    --input-size "${INFERENCE_INPUT_SIZE}" --strides "${INFERENCE_STRIDES}" \
    --restore-from "${RESTORE_FROM}" --colormap cityscapes --num-classes 19 --ignore-label 255 \
    "${msc_flags[@]}" ${EXTRA_MODEL_FLAGS} --save-dir "${SAVE_DIR}"
  ${PYTHON} -m aaf.benchmark --pred-dir "${SAVE_DIR}/gray/" --gt-dir "${GTA5_ROOT}/trainIds/" --num-classes 19 \
    --class-names cityscapes
}
