#!/bin/bash
# The A2GNN pipeline of the original README for one supervision, then the DeepLab stage on its pseudo labels.
# Source this file, set the variables, call `a2gnn_run_pipeline`.
# Caller sets: SUPERVISION (box|scribble|point|image), VOC12_ROOT, TRAIN_LIST, INFER_LIST, EVAL_LIST, SEED_DIR
#   (the seed folder: SEAM_Box, Scribble_SuperPixel, SEAM_Point, SEAM_Image), AFF_SEED_DIR (seeds for the
#   affinity net; default SEED_DIR; scribble uses SEAM_Scribble), AFF_WEIGHTS (initial weights of the gated
#   affinity net, the README's resnet38_aff_SEAM.pth), OUT; optional CAM_DIR (SEAM CAM dicts: --rw True for
#   point / image), SEAM_WEIGHTS (image only: run infer_seam first, writing the seeds to SEED_DIR and the CAMs to
#   CAM_DIR, as the README's first command), CLS_LABELS, PYTHON, MODEL_FLAGS, AFF_FLAGS, GNN_FLAGS and the DeepLab
#   variables of deeplab_stage.sh.
set -e
source "$(dirname "${BASH_SOURCE[0]}")/deeplab_stage.sh"

a2gnn_run_pipeline() {
  local py=${PYTHON:-python3}
  local radius_aff radius_gnn script
  case "${SUPERVISION}" in
    box) radius_aff=4; radius_gnn=4; script=a2gnn.train_infer_box ;;
    scribble) radius_aff=4; radius_gnn=3; script=a2gnn.train_infer_others ;;  # the README keeps r=3 for the GNN
    point|image) radius_aff=3; radius_gnn=3; script=a2gnn.train_infer_others ;;
    *) echo "SUPERVISION must be box, scribble, point or image (got '${SUPERVISION}')" >&2; return 2 ;;
  esac
  mkdir -p "${OUT}"
  # 0. (image) SEAM CAMs, confident seeds and top-100% labels (infer_SEAM.py)
  if [ "${SUPERVISION}" = image ] && [ -n "${SEAM_WEIGHTS}" ]; then
    CAM_DIR=${CAM_DIR:-${OUT}/seam_cam}
    ${py} -m a2gnn.infer_seam --weights "${SEAM_WEIGHTS}" --voc12_root "${VOC12_ROOT}" --infer_list "${INFER_LIST}" \
      --cls_labels "${CLS_LABELS:-voc12/cls_labels.npy}" --out_cam "${CAM_DIR}" --crf "${SEED_DIR}" \
      --ori_crf "${OUT}/SEAM_Image_Full" ${MODEL_FLAGS}
  fi
  # 1. gated affinity network on the seeds (train_gated_aff.py)
  if [ ! -f "${OUT}/aff_${SUPERVISION}.npz" ]; then
    ${py} -m a2gnn.train_gated_aff --radius ${radius_aff} --label_dir "${AFF_SEED_DIR:-${SEED_DIR}}" \
      --voc12_root "${VOC12_ROOT}" --train_list "${TRAIN_LIST}" --weights "${AFF_WEIGHTS}" \
      --session_name "${OUT}/aff_${SUPERVISION}" ${MODEL_FLAGS} ${AFF_FLAGS}
  fi
  # 2. per-image A2GNN pseudo labels (resumable: existing PNGs are skipped)
  local extra=()
  if [ "${SUPERVISION}" = box ]; then
    extra=(--BoxXmlpath "${VOC12_ROOT}/Annotations")
  elif [ -n "${CAM_DIR}" ]; then
    extra=(--rw True --cam_dir "${CAM_DIR}")
  else
    extra=(--rw False)
  fi
  ${py} -m ${script} --weights "${OUT}/aff_${SUPERVISION}.npz" --radius ${radius_gnn} \
    --voc12_root "${VOC12_ROOT}" --infer_list "${INFER_LIST}" --seed_label_root "${SEED_DIR}" \
    --save_path "${OUT}/pseudo_labels" "${extra[@]}" ${MODEL_FLAGS} ${GNN_FLAGS}
  # 3. DeepLab on the pseudo labels
  deeplab_on_pseudo_labels "${OUT}/pseudo_labels" "${INFER_LIST}" "${EVAL_LIST}" "${VOC12_ROOT}" "${OUT}/deeplab"
}
