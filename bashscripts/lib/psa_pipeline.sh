#!/bin/bash
# PSA (AffinityNet) end to end, the README's steps: classifier -> CAMs + la/ha CRF -> AffinityNet -> random walk
# -> evaluation -> DeepLab on the random-walk labels. Sourced by bashscripts/{voc12,synthetic}/psa_pipeline.sh,
# which set the variables below; `psa_run_pipeline` runs the stages whose IS_* switch is 1 (default all).
# Per-image stages skip finished images and training resumes from its checkpoints, so a rerun continues.
#
# Required: VOC12_ROOT, TRAIN_LIST (train_aug), INFER_LIST (images to label, README: train), EVAL_LIST (val),
#   CLS_LABELS, OUT (work folder), NETWORK (resnet38|vgg16), CLS_WEIGHTS (ImageNet init of train_cls; "" = from
#   scratch), AFF_WEIGHTS (init of train_aff), BATCH_CLS (16), BATCH_AFF (8), CROP (448), EPOCHS_CLS (15),
#   EPOCHS_AFF (8), LR (0.1), ALPHA_LOW (4), ALPHA_HIGH (32), ALPHA_RW (16), BETA (8), LOGT (8).
# Optional: MODEL_FLAGS (e.g. --width_multiplier 0.125), MAX_STEPS_CLS / MAX_STEPS_AFF (override the epochs),
#   RW_IMPL (sparse|dense), CLS_FLAGS / AFF_FLAGS (more train_cls / train_aff flags, e.g. the from-scratch
#   settings of the synthetic pipeline), and the DeepLab variables of lib/deeplab_stage.sh.
set -e
PYTHON=${PYTHON:-python3}
source "$(dirname "${BASH_SOURCE[0]}")/deeplab_stage.sh"

psa_run_pipeline() {
  mkdir -p "${OUT}"
  local common=(--voc12_root "${VOC12_ROOT}" ${MODEL_FLAGS})
  if [ "${IS_TRAIN_CLS:-1}" -eq 1 ] && [ ! -f "${OUT}/${NETWORK}_cls.npz" ]; then
    ${PYTHON} -m affinitynet.train_cls --network "network.${NETWORK}_cls" --weights "${CLS_WEIGHTS}" \
      --train_list "${TRAIN_LIST}" --cls_labels "${CLS_LABELS}" --batch_size "${BATCH_CLS}" \
      --max_epoches "${EPOCHS_CLS}" --max_steps "${MAX_STEPS_CLS:-0}" --lr "${LR}" --crop_size "${CROP}" \
      --session_name "${OUT}/${NETWORK}_cls" "${common[@]}" ${CLS_FLAGS}
  fi
  if [ "${IS_INFER_CLS:-1}" -eq 1 ]; then
    ${PYTHON} -m affinitynet.infer_cls --network "network.${NETWORK}_cls" --weights "${OUT}/${NETWORK}_cls.npz" \
      --infer_list "${TRAIN_LIST}" --cls_labels "${CLS_LABELS}" --low_alpha "${ALPHA_LOW}" \
      --high_alpha "${ALPHA_HIGH}" --out_cam "${OUT}/cam" --out_la_crf "${OUT}/crf_la" \
      --out_ha_crf "${OUT}/crf_ha" --out_cam_pred "${OUT}/cam_pred" "${common[@]}"
  fi
  if [ "${IS_TRAIN_AFF:-1}" -eq 1 ] && [ ! -f "${OUT}/${NETWORK}_aff.npz" ]; then
    ${PYTHON} -m affinitynet.train_aff --network "network.${NETWORK}_aff" --weights "${AFF_WEIGHTS}" \
      --train_list "${TRAIN_LIST}" --la_crf_dir "${OUT}/crf_la" --ha_crf_dir "${OUT}/crf_ha" \
      --batch_size "${BATCH_AFF}" --max_epoches "${EPOCHS_AFF}" --max_steps "${MAX_STEPS_AFF:-0}" --lr "${LR}" \
      --crop_size "${CROP}" --session_name "${OUT}/${NETWORK}_aff" "${common[@]}" ${AFF_FLAGS}
  fi
  if [ "${IS_INFER_AFF:-1}" -eq 1 ]; then
    ${PYTHON} -m affinitynet.infer_aff --network "network.${NETWORK}_aff" --weights "${OUT}/${NETWORK}_aff.npz" \
      --infer_list "${INFER_LIST}" --cam_dir "${OUT}/cam" --out_rw "${OUT}/rw" --alpha "${ALPHA_RW}" \
      --beta "${BETA}" --logt "${LOGT}" --rw_impl "${RW_IMPL:-sparse}" "${common[@]}"
  fi
  if [ "${IS_EVALUATE:-1}" -eq 1 ]; then
    ${PYTHON} -m affinitynet.evaluate --list "${INFER_LIST}" --voc12_root "${VOC12_ROOT}" --cam_dir "${OUT}/cam" \
      --sweep threshold --out_dir "${OUT}/eval_cam"
    ${PYTHON} -m affinitynet.evaluate --list "${INFER_LIST}" --voc12_root "${VOC12_ROOT}" --pred_dir "${OUT}/rw" \
      --out_dir "${OUT}/eval_rw"
  fi
  if [ "${IS_DEEPLAB:-1}" -eq 1 ]; then
    deeplab_on_pseudo_labels "${OUT}/rw" "${INFER_LIST}" "${EVAL_LIST}" "${VOC12_ROOT}" "${OUT}/deeplab"
  fi
  return 0
}
