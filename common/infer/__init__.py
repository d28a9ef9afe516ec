"""Inference: sliding window (`inference.py`), multi-scale + flip (`inference_msc.py`), prediction files and
SavedModel export.

Public API:
  sliding_window_predict(image, predict_fn, input_size, strides, num_classes, ignore_label=255, ...) -> uint8 [H, W]
  multiscale_predict(image, predict_fn, input_size, strides, num_classes, ignore_label=255, flip_aug, scale_aug)
  run_inference(model_or_predict_fn, image_paths, save_dir, input_size, strides, num_classes, colormap, msc=False,
                flip_aug=False, scale_aug=False, ...)
  export_saved_model(model, out_dir, input_size, num_classes, strides=None, img_mean=IMG_MEAN)  (common.infer.export)
"""
from common.data.aaf_reader import IMG_MEAN

from common.infer.multiscale import (MSC_SCALES, multiscale_passes, multiscale_predict, multiscale_scores,
                                     scaled_size)
from common.infer.outputs import load_image, prediction_basename, run_inference, save_prediction
from common.infer.sliding_window import (resize_bilinear_legacy, softmax_probabilities, sliding_window_predict,
                                         sliding_window_scores, upsampled_outputs, window_boxes, window_ends)

__all__ = [
    'IMG_MEAN', 'MSC_SCALES', 'load_image', 'multiscale_passes', 'multiscale_predict', 'multiscale_scores',
    'prediction_basename', 'resize_bilinear_legacy', 'run_inference', 'save_prediction', 'scaled_size',
    'sliding_window_predict', 'sliding_window_scores', 'softmax_probabilities', 'upsampled_outputs',
    'window_boxes', 'window_ends',
]
