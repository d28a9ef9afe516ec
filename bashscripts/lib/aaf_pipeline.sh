#!/bin/bash
# Shared stages of the AAF bash pipelines (sourced by bashscripts/{voc12,cityscapes,synthetic}/*.sh).
#
# Each caller sets the hyper-parameters below and the IS_* switches, then calls `aaf_run_pipeline`.
# The stages mirror the original two-stage VOC pipeline (train -> sliding-window inference -> benchmark,
# then fine-tune -> multi-scale + flip inference -> benchmark) and the one-stage Cityscapes pipeline.
#
# Required: MODE (baseline|affinity|aaf), DATA_DIR, TRAIN_LIST_1, TEST_LIST, GT_DIR, NUM_CLASSES, BATCH_SIZE,
#   TRAIN_INPUT_SIZE, NUM_STEPS, LR_1, SNAPSHOT_DIR, INFERENCE_INPUT_SIZE, INFERENCE_STRIDES, COLORMAP.
# Optional: NUM_GPU (1), TRAIN_LIST_2 / LR_2 (stage 2), RESTORE_FROM (ImageNet Slim checkpoint),
#   UPDATE_TB_EVERY (50), WEIGHT_DECAY (5e-4), ITER_SIZE (1), KLD_MARGIN (3.0), KLD_LAMBDA_1/2 (1.0),
#   STRING_REPLACE (benchmark path rewrite), EXTRA_TRAIN_FLAGS (e.g. a reduced backbone for synthetic runs),
#   STAGE1_INFERENCE (single|msc, default single), STAGE2_INFERENCE (msc),
#   LOSS_REDUCTION (global_mean; the *_mgpu.sh scripts set tower_mean = the original train_mgpu.py weighting),
#   KERNEL_INITIALIZER (glorot_uniform; the *_mgpu.sh scripts set msra_uniform as the original multi-GPU layers).
set -e

PYTHON=${PYTHON:-python3}
NUM_GPU=${NUM_GPU:-1}
UPDATE_TB_EVERY=${UPDATE_TB_EVERY:-50}
WEIGHT_DECAY=${WEIGHT_DECAY:-5e-4}
ITER_SIZE=${ITER_SIZE:-1}
KLD_MARGIN=${KLD_MARGIN:-3.0}
KLD_LAMBDA_1=${KLD_LAMBDA_1:-1.0}
KLD_LAMBDA_2=${KLD_LAMBDA_2:-1.0}
STAGE1_INFERENCE=${STAGE1_INFERENCE:-single}
STAGE2_INFERENCE=${STAGE2_INFERENCE:-msc}
LOSS_REDUCTION=${LOSS_REDUCTION:-global_mean}
KERNEL_INITIALIZER=${KERNEL_INITIALIZER:-glorot_uniform}

aaf_train() {  # $1 stage dir, $2 list, $3 lr, $4 restore-from, rest: extra flags
  local stage_dir=$1 list=$2 lr=$3 restore=$4
  shift 4
  local restore_flag=()
  [ -n "${restore}" ] && restore_flag=(--restore-from "${restore}")
  ${PYTHON} -m aaf.train --mode "${MODE}" \
    --snapshot-dir "${stage_dir}" "${restore_flag[@]}" \
    --data-list "${list}" --data-dir "${DATA_DIR}" \
    --batch-size "${BATCH_SIZE}" --num-gpu "${NUM_GPU}" \
    --loss-reduction "${LOSS_REDUCTION}" --kernel-initializer "${KERNEL_INITIALIZER}" \
    --save-pred-every "${NUM_STEPS}" --update-tb-every "${UPDATE_TB_EVERY}" \
    --input-size "${TRAIN_INPUT_SIZE}" --learning-rate "${lr}" \
    --weight-decay "${WEIGHT_DECAY}" --iter-size "${ITER_SIZE}" \
    --num-classes "${NUM_CLASSES}" --num-steps $((NUM_STEPS + 1)) \
    --random-mirror --random-scale --random-crop \
    --kld-margin "${KLD_MARGIN}" --kld-lambda-1 "${KLD_LAMBDA_1}" --kld-lambda-2 "${KLD_LAMBDA_2}" \
    --is-training ${EXTRA_TRAIN_FLAGS} "$@"
}

aaf_infer() {  # $1 stage dir, $2 single|msc
  local stage_dir=$1 kind=$2 program=aaf.inference msc_flags=()
  if [ "${kind}" = msc ]; then
    program=aaf.inference_msc
    msc_flags=(--flip-aug --scale-aug)
  fi
  ${PYTHON} -m ${program} \
    --data-dir "${DATA_DIR}" --data-list "${TEST_LIST}" \
    --input-size "${INFERENCE_INPUT_SIZE}" --strides "${INFERENCE_STRIDES}" \
    --restore-from "${stage_dir}/model.ckpt-${NUM_STEPS}" \
    --colormap "${COLORMAP}" --num-classes "${NUM_CLASSES}" --ignore-label 255 \
    "${msc_flags[@]}" ${EXTRA_MODEL_FLAGS} \
    --save-dir "${stage_dir}/results/$(basename "${TEST_LIST}" .txt)"
}

aaf_benchmark() {  # $1 stage dir
  local stage_dir=$1 replace_flag=()
  [ -n "${STRING_REPLACE}" ] && replace_flag=(--string-replace "${STRING_REPLACE}")
  ${PYTHON} -m aaf.benchmark \
    --pred-dir "${stage_dir}/results/$(basename "${TEST_LIST}" .txt)/gray/" \
    --gt-dir "${GT_DIR}" --num-classes "${NUM_CLASSES}" "${replace_flag[@]}"
}

aaf_run_pipeline() {
  local stage1=${SNAPSHOT_DIR}/stage1 stage2=${SNAPSHOT_DIR}/stage2
  [ -z "${TRAIN_LIST_2}" ] && stage1=${SNAPSHOT_DIR}  # one-stage pipelines (Cityscapes) write to the root
  [ "${IS_TRAIN_1:-1}" -eq 1 ] && aaf_train "${stage1}" "${TRAIN_LIST_1}" "${LR_1}" "${RESTORE_FROM}" \
    --not-restore-classifier
  [ "${IS_INFERENCE_1:-1}" -eq 1 ] && aaf_infer "${stage1}" "${STAGE1_INFERENCE}"
  [ "${IS_BENCHMARK_1:-1}" -eq 1 ] && aaf_benchmark "${stage1}"
  if [ -n "${TRAIN_LIST_2}" ]; then
    # Stage 2 restores everything of stage 1 (classifier included); AAF's adversarial weights and the
    # optimizer slots start afresh, as in the original.
    [ "${IS_TRAIN_2:-1}" -eq 1 ] && aaf_train "${stage2}" "${TRAIN_LIST_2}" "${LR_2}" \
      "${stage1}/model.ckpt-${NUM_STEPS}"
    [ "${IS_INFERENCE_2:-1}" -eq 1 ] && aaf_infer "${stage2}" "${STAGE2_INFERENCE}"
    [ "${IS_BENCHMARK_2:-1}" -eq 1 ] && aaf_benchmark "${stage2}"
  fi
  return 0
}
