#!/bin/bash
# Shared stages of the SegSort bash pipelines (sourced by bashscripts/{voc12,synthetic}/train_segsort*.sh).
#
# The caller sets the variables below and the IS_* switches, then calls `segsort_run_pipeline` (supervised, two
# stages as train_segsort.sh / train_segsort_mgpu.sh) or `segsort_run_unsup_pipeline` (train_segsort_unsup.sh).
# Required: DATA_DIR, TRAIN_LIST_1, TEST_LIST, GT_DIR, BATCH_SIZE, TRAIN_INPUT_SIZE, NUM_STEPS_1, LR_1,
#   SNAPSHOT_DIR, INFERENCE_INPUT_SIZE, INFERENCE_STRIDES, SINGLE_INPUT_SIZE (single-scale canvas), KNN_K.
# Optional: NUM_GPU (1), TRAIN_LIST_2 / NUM_STEPS_2 / LR_2 / SAVE_EVERY_2 (stage 2), RESTORE_FROM (ImageNet
#   Slim checkpoint, empty = from scratch), STAGE2_NOT_RESTORE_CLASSIFIER (1 as train_segsort.sh, Q-S6),
#   EMBEDDING_DIM (32), CONCENTRATION (10), NUM_CLUSTERS (5), KMEANS_ITERATIONS (10), NUM_BANKS (2),
#   UPDATE_TB_EVERY (50), WEIGHT_DECAY (5e-4), ITER_SIZE (1), EXTRA_MODEL_FLAGS / EXTRA_TRAIN_FLAGS,
#   HED_DIR (unsupervised: over-segmentations written/read there, Q-S2 fix), OVERSEG_METHOD (slic|felzenszwalb).
set -e

PYTHON=${PYTHON:-python3}
NUM_GPU=${NUM_GPU:-1}
UPDATE_TB_EVERY=${UPDATE_TB_EVERY:-50}
WEIGHT_DECAY=${WEIGHT_DECAY:-5e-4}
ITER_SIZE=${ITER_SIZE:-1}
EMBEDDING_DIM=${EMBEDDING_DIM:-32}
CONCENTRATION=${CONCENTRATION:-10}
NUM_CLUSTERS=${NUM_CLUSTERS:-5}
KMEANS_ITERATIONS=${KMEANS_ITERATIONS:-10}
NUM_BANKS=${NUM_BANKS:-2}
STAGE2_NOT_RESTORE_CLASSIFIER=${STAGE2_NOT_RESTORE_CLASSIFIER:-1}
EMBEDDING_FLAGS="--embedding_dim ${EMBEDDING_DIM} --num_clusters ${NUM_CLUSTERS} --kmeans_iterations ${KMEANS_ITERATIONS}"

segsort_train() {  # $1 program, $2 stage dir, $3 list, $4 lr, $5 steps, $6 save every, $7 restore-from, rest: flags
  local program=$1 stage_dir=$2 list=$3 lr=$4 steps=$5 save_every=$6 restore=$7
  shift 7
  local restore_flag=()
  [ -n "${restore}" ] && restore_flag=(--restore_from "${restore}")
  ${PYTHON} -m "${program}" \
    --snapshot_dir "${stage_dir}" "${restore_flag[@]}" \
    --data_list "${list}" --data_dir "${DATA_DIR}" \
    --batch_size "${BATCH_SIZE}" --num_gpu "${NUM_GPU}" \
    --save_pred_every "${save_every}" --update_tb_every "${UPDATE_TB_EVERY}" \
    --input_size "${TRAIN_INPUT_SIZE}" --learning_rate "${lr}" \
    --weight_decay "${WEIGHT_DECAY}" --iter_size "${ITER_SIZE}" \
    --num_steps $((steps + 1)) --embedding_dim "${EMBEDDING_DIM}" --concentration "${CONCENTRATION}" \
    --random_mirror --random_scale --random_crop --is_training ${EXTRA_TRAIN_FLAGS} "$@"
}

segsort_prototypes() {  # $1 checkpoint, $2 list, $3 save dir
  ${PYTHON} -m segsort.extract_prototypes \
    --data_dir "${DATA_DIR}" --data_list "$2" \
    --input_size "${INFERENCE_INPUT_SIZE}" --strides "${INFERENCE_STRIDES}" \
    --restore_from "$1" --save_dir "$3" ${EMBEDDING_FLAGS} ${EXTRA_MODEL_FLAGS}
}

segsort_infer() {  # $1 checkpoint, $2 prototype dir, $3 save dir, $4 single|msc
  local input_size=${SINGLE_INPUT_SIZE} program=segsort.inference msc_flags=()
  if [ "$4" = msc ]; then
    program=segsort.inference_msc
    input_size=${INFERENCE_INPUT_SIZE}
    msc_flags=(--flip_aug --scale_aug)
  fi
  ${PYTHON} -m ${program} \
    --data_dir "${DATA_DIR}" --data_list "${TEST_LIST}" \
    --input_size "${input_size}" --strides "${INFERENCE_STRIDES}" \
    --restore_from "$1" --prototype_dir "$2" --k_in_nearest_neighbors "${KNN_K}" \
    --ignore_label 255 --colormap voc "${msc_flags[@]}" \
    --save_dir "$3" ${EMBEDDING_FLAGS} ${EXTRA_MODEL_FLAGS}
}

segsort_benchmark() {  # $1 results dir
  ${PYTHON} -m common.eval.benchmark --pred_dir "$1/gray/" --gt_dir "${GT_DIR}" --num_classes 21
}

segsort_run_pipeline() {
  local stage1=${SNAPSHOT_DIR}/stage1 stage2=${SNAPSHOT_DIR}/stage2 split
  local list1_name list2_name
  split=$(basename "${TEST_LIST}" .txt)
  list1_name=$(basename "${TRAIN_LIST_1}" .txt)
  local ckpt1=${stage1}/model.ckpt-${NUM_STEPS_1}
  local supervised=(--num_clusters "${NUM_CLUSTERS}" --kmeans_iterations "${KMEANS_ITERATIONS}"
                    --num_banks "${NUM_BANKS}")
  [ "${IS_TRAIN_1:-1}" -eq 1 ] && segsort_train segsort.train "${stage1}" "${TRAIN_LIST_1}" "${LR_1}" \
    "${NUM_STEPS_1}" "${NUM_STEPS_1}" "${RESTORE_FROM}" --not_restore_classifier "${supervised[@]}"
  [ "${IS_PROTOTYPE_1:-1}" -eq 1 ] && segsort_prototypes "${ckpt1}" "${TRAIN_LIST_1}" \
    "${stage1}/results/${list1_name}"
  [ "${IS_INFERENCE_1:-1}" -eq 1 ] && segsort_infer "${ckpt1}" "${stage1}/results/${list1_name}/prototypes" \
    "${stage1}/results/${split}" single
  [ "${IS_INFERENCE_MSC_1:-0}" -eq 1 ] && segsort_infer "${ckpt1}" "${stage1}/results/${list1_name}/prototypes" \
    "${stage1}/results/${split}" msc
  [ "${IS_BENCHMARK_1:-1}" -eq 1 ] && segsort_benchmark "${stage1}/results/${split}"
  if [ -n "${TRAIN_LIST_2}" ]; then
    list2_name=$(basename "${TRAIN_LIST_2}" .txt)
    local ckpt2=${stage2}/model.ckpt-${NUM_STEPS_2} stage2_flags=()
    [ "${STAGE2_NOT_RESTORE_CLASSIFIER}" -eq 1 ] && stage2_flags=(--not_restore_classifier)
    [ "${IS_TRAIN_2:-1}" -eq 1 ] && segsort_train segsort.train "${stage2}" "${TRAIN_LIST_2}" "${LR_2}" \
      "${NUM_STEPS_2}" "${SAVE_EVERY_2:-${NUM_STEPS_2}}" "${ckpt1}" "${stage2_flags[@]}" "${supervised[@]}"
    [ "${IS_PROTOTYPE_2:-1}" -eq 1 ] && segsort_prototypes "${ckpt2}" "${TRAIN_LIST_2}" \
      "${stage2}/results/${list2_name}"
    # Single-scale and multi-scale results go to the same directory, as in the original (Q-S13): the
    # benchmark reads whatever ran last.
    [ "${IS_INFERENCE_2:-1}" -eq 1 ] && segsort_infer "${ckpt2}" "${stage2}/results/${list2_name}/prototypes" \
      "${stage2}/results/${split}" single
    [ "${IS_INFERENCE_MSC_2:-1}" -eq 1 ] && segsort_infer "${ckpt2}" \
      "${stage2}/results/${list2_name}/prototypes" "${stage2}/results/${split}" msc
    [ "${IS_BENCHMARK_2:-1}" -eq 1 ] && segsort_benchmark "${stage2}/results/${split}"
  fi
  return 0
}

segsort_run_unsup_pipeline() {
  local split list_name ckpt=${SNAPSHOT_DIR}/model.ckpt-${NUM_STEPS_1} hed_flags=()
  split=$(basename "${TEST_LIST}" .txt)
  list_name=$(basename "${TRAIN_LIST_1}" .txt)
  [ -n "${HED_DIR}" ] && hed_flags=(--hed_dir "${HED_DIR}")
  [ "${IS_OVERSEG:-0}" -eq 1 ] && ${PYTHON} -m segsort.overseg --method "${OVERSEG_METHOD:-slic}" \
    --data_dir "${DATA_DIR}" --data_list "${TRAIN_LIST_1}" "${hed_flags[@]}"
  [ "${IS_TRAIN:-1}" -eq 1 ] && segsort_train segsort.train_unsup "${SNAPSHOT_DIR}" "${TRAIN_LIST_1}" "${LR_1}" \
    "${NUM_STEPS_1}" "${NUM_STEPS_1}" "${RESTORE_FROM}" --not_restore_classifier "${hed_flags[@]}"
  # Prototypes use the labels of the training list, as in the original.
  [ "${IS_PROTOTYPE:-1}" -eq 1 ] && segsort_prototypes "${ckpt}" "${TRAIN_LIST_1}" \
    "${SNAPSHOT_DIR}/results/${list_name}"
  [ "${IS_INFERENCE_MSC:-1}" -eq 1 ] && segsort_infer "${ckpt}" "${SNAPSHOT_DIR}/results/${list_name}/prototypes" \
    "${SNAPSHOT_DIR}/results/${split}" msc
  [ "${IS_BENCHMARK:-1}" -eq 1 ] && segsort_benchmark "${SNAPSHOT_DIR}/results/${split}"
  return 0
}
