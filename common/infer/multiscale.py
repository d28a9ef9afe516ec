"""Multi-scale + flip inference of AAF/SegSort `inference_msc.py` (spec aaf_segsort.md 5.2).

Passes: the image resized (TF1 legacy bilinear) to every scale, then, with flip augmentation, the left-right flip of
every scaled image (6 unflipped then 6 flipped). Each pass is a sliding-window pass whose accumulator (initialised
to 255, Q-A14) is divided by the per-pixel window count, cropped, resized with OpenCV's bilinear (half-pixel,
Q-A13) to the scale-1 size, un-flipped and added into a float64 buffer. The argmax of the buffer is the prediction.
"""
import cv2
import numpy as np

from common.infer.sliding_window import as_predict_fn, resize_bilinear_legacy, sliding_window_scores

MSC_SCALES = (0.5, 0.75, 1, 1.25, 1.5, 1.75)


def scaled_size(height, width, scale):
    """Size of a scaled pass: `int(float32(H) * scale)` like the original's `tf.to_int32(tf.to_float(H) * s)`."""
    return (int(np.float32(height) * np.float32(scale)), int(np.float32(width) * np.float32(scale)))


def multiscale_passes(image, flip_aug=False, scale_aug=False, scales=None):
    """The pass images of `inference_msc.py` in the original's order.

    Args:
      image: float array [H, W, 3] (mean-subtracted RGB).
      flip_aug: append the left-right flipped copy of every scaled image (after all unflipped ones).
      scale_aug: use `MSC_SCALES` instead of [1].
      scales: explicit list of scales (overrides `scale_aug`).
    Returns:
      (list of float32 arrays [h_s, w_s, 3], list of bool is_flipped, index of the scale-1 pass).
    """
    image = np.asarray(image, np.float32)
    if scales is None:
        scales = MSC_SCALES if scale_aug else (1,)
    height, width = image.shape[:2]
    scaled = []
    for scale in scales:
        size = scaled_size(height, width, scale)
        if min(size) < 1:
            raise ValueError(f'scale {scale} turns a {height}x{width} image into an empty one')
        scaled.append(resize_bilinear_legacy(image[np.newaxis], size).numpy()[0])
    flipped = [False] * len(scaled)
    if flip_aug:
        scaled += [img[:, ::-1] for img in scaled]
        flipped += [True] * len(scales)
    # The original takes the output size from pass 2 (scale 1 of the 6 scales) or pass 0.
    reference = list(scales).index(1) if 1 in scales else 0
    return scaled, flipped, reference


def resize_scores_cv2(scores, size_hw):
    """OpenCV INTER_LINEAR resize of a [h, w, C] score map to (H, W), keeping the channel axis for C == 1."""
    resized = cv2.resize(np.ascontiguousarray(scores), (int(size_hw[1]), int(size_hw[0])),
                         interpolation=cv2.INTER_LINEAR)
    return resized.reshape(int(size_hw[0]), int(size_hw[1]), scores.shape[-1])


def multiscale_scores(image, predict_fn, input_size, strides, num_classes, ignore_label=255, flip_aug=False,
                      scale_aug=False, scales=None, init_with_zero=False, average=True, window_fn=None,
                      batch_windows=True, max_windows_per_call=None, return_passes=False):
    """Fused multi-scale (+ flip) scores of `inference_msc.py`.

    Args:
      image: float array [H, W, 3], mean-subtracted RGB.
      predict_fn, input_size, strides, num_classes, ignore_label, batch_windows, max_windows_per_call,
        window_fn: as `sliding_window_scores`.
      flip_aug, scale_aug, scales: as `multiscale_passes`.
      init_with_zero: accumulators start at 0 instead of `ignore_label` (removes the 255/count offsets, Q-A14).
      average: divide each pass by its window count (faithful AAF). SegSort's MSC votes use
        `average=False, init_with_zero=True`.
      return_passes: also return the per-pass maps (cropped, before the OpenCV resize).
    Returns:
      float64 array [H, W, num_classes], or (fused, list of float32 [h_s, w_s, C]) with `return_passes`.
    """
    predict_fn = as_predict_fn(predict_fn)
    passes, flipped, reference = multiscale_passes(image, flip_aug=flip_aug, scale_aug=scale_aug, scales=scales)
    out_hw = passes[reference].shape[:2]
    fused = np.zeros(out_hw + (num_classes,), np.float64)
    per_pass = []
    for pass_image, is_flipped in zip(passes, flipped):
        scores = sliding_window_scores(pass_image, predict_fn, input_size, strides, num_classes,
                                       ignore_label=ignore_label, batch_windows=batch_windows,
                                       init_with_zero=init_with_zero, average=average, window_fn=window_fn,
                                       max_windows_per_call=max_windows_per_call)
        if return_passes:
            per_pass.append(scores)
        resized = resize_scores_cv2(scores, out_hw)
        if is_flipped:
            resized = resized[:, ::-1]
        fused += resized
    return (fused, per_pass) if return_passes else fused


def multiscale_predict(image, predict_fn, input_size, strides, num_classes, ignore_label=255, flip_aug=False,
                       scale_aug=False, return_scores=False, **kwargs):
    """Multi-scale (+ flip) prediction of `inference_msc.py` (spec 5.2).

    Args: as `multiscale_scores` (extra keyword arguments are passed on).
    Returns:
      uint8 array [H, W], or (prediction, fused float64 [H, W, C]) with `return_scores`.

    Example:
      pred = multiscale_predict(image - IMG_MEAN, model, (480, 480), (320, 320), 21, flip_aug=True,
                                scale_aug=True)
    """
    fused = multiscale_scores(image, predict_fn, input_size, strides, num_classes, ignore_label=ignore_label,
                              flip_aug=flip_aug, scale_aug=scale_aug, **kwargs)
    if isinstance(fused, tuple):
        fused = fused[0]
    prediction = np.argmax(fused, axis=-1).astype(np.uint8)
    return (prediction, fused) if return_scores else prediction
