#!/bin/bash
# The DeepLab stage the PSA / A2GNN authors ran but never released: train DeepLab (ResNet-101 + ASPP) on pseudo
# labels with `aaf.train --mode baseline --model deeplab`, infer, refine with a dense CRF, benchmark.
# Source this file, set the variables, call `deeplab_on_pseudo_labels`.
#
#   deeplab_on_pseudo_labels LABEL_DIR PSA_TRAIN_LIST PSA_EVAL_LIST VOC12_ROOT OUT_DIR
#     LABEL_DIR       pseudo-label PNGs <id>.png (0..20), e.g. infer_aff --out_rw
#     PSA_TRAIN_LIST  PSA list of the training ids; PSA_EVAL_LIST: PSA list evaluated against GT_DIR
#     VOC12_ROOT      folder with JPEGImages/; OUT_DIR: lists, checkpoints, results
# Variables (defaults = the DeepLab-v2 VOC recipe on one GPU): PYTHON, DEEPLAB_NUM_STEPS (20000),
#   DEEPLAB_BATCH_SIZE (10), DEEPLAB_INPUT_SIZE (321,321), DEEPLAB_LR (2.5e-4), DEEPLAB_RESTORE_FROM (ImageNet
#   ResNet-101 Slim checkpoint; empty = from scratch), DEEPLAB_MODEL_FLAGS (e.g. a reduced backbone),
#   DEEPLAB_INFERENCE_SIZE (480,480), DEEPLAB_INFERENCE_STRIDES (320,320), GT_DIR (default
#   VOC12_ROOT/SegmentationClass/), NUM_GPU (1).
set -e

deeplab_on_pseudo_labels() {
  local label_dir=$1 train_list=$2 eval_list=$3 voc12_root=$4 out_dir=$5
  local py=${PYTHON:-python3}
  local steps=${DEEPLAB_NUM_STEPS:-20000}
  local gt_dir=${GT_DIR:-${voc12_root}/SegmentationClass/}
  local data_dir
  data_dir=$(cd "${voc12_root}" && pwd)/
  mkdir -p "${out_dir}"
  # list files relative to --data-dir: <image> <pseudo label> for training, <image> <gt> for evaluation
  ${py} -m common.data.lists "${out_dir}/pseudo_train.txt" "${train_list}" "${voc12_root}" "${label_dir}" \
    "${data_dir}"
  ${py} -m common.data.lists "${out_dir}/eval.txt" "${eval_list}" "${voc12_root}" "${gt_dir}" "${data_dir}"
  local restore_flag=()
  [ -n "${DEEPLAB_RESTORE_FROM}" ] && restore_flag=(--restore-from "${DEEPLAB_RESTORE_FROM}" --not-restore-classifier)
  ${py} -m aaf.train --mode baseline --model deeplab \
    --data-dir "${data_dir}" --data-list "${out_dir}/pseudo_train.txt" \
    --snapshot-dir "${out_dir}/snapshots" "${restore_flag[@]}" \
    --batch-size "${DEEPLAB_BATCH_SIZE:-10}" --num-gpu "${NUM_GPU:-1}" \
    --input-size "${DEEPLAB_INPUT_SIZE:-321,321}" --learning-rate "${DEEPLAB_LR:-2.5e-4}" \
    --num-classes 21 --num-steps $((steps + 1)) --save-pred-every "${steps}" \
    --random-mirror --random-scale --random-crop --is-training ${DEEPLAB_MODEL_FLAGS}
  ${py} -m aaf.inference --model deeplab \
    --data-dir "${data_dir}" --data-list "${out_dir}/eval.txt" \
    --input-size "${DEEPLAB_INFERENCE_SIZE:-480,480}" --strides "${DEEPLAB_INFERENCE_STRIDES:-320,320}" \
    --restore-from "${out_dir}/snapshots/model.ckpt-${steps}" --colormap voc --num-classes 21 \
    --ignore-label 255 ${DEEPLAB_MODEL_FLAGS} --save-dir "${out_dir}/results"
  ${py} -m affinitynet.crf_labels --image_dir "${voc12_root}/JPEGImages" \
    --label_dir "${out_dir}/results/gray" --out_dir "${out_dir}/results/crf"
  echo "DeepLab on pseudo labels, without CRF:"
  ${py} -m aaf.benchmark --pred-dir "${out_dir}/results/gray/" --gt-dir "${gt_dir}" --num-classes 21
  echo "DeepLab on pseudo labels, with CRF:"
  ${py} -m aaf.benchmark --pred-dir "${out_dir}/results/crf/" --gt-dir "${gt_dir}" --num-classes 21
}
