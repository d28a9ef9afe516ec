"""Single-scale sliding-window inference of AAF/SegSort `inference.py` (spec aaf_segsort.md 5.1).

The image (mean-subtracted RGB, original size H x W) is zero-padded bottom/right to at least the window size,
covered by windows whose END indices come from `np.linspace(..., dtype=np.int32)`, and every window's output is
upsampled to the window with TF1's legacy bilinear resize, turned into probabilities and summed into an
accumulator that the original initialises with `ignore_label` (255, Q-A14). The accumulator is cropped to H x W
and its argmax is the prediction.

What a window contributes is pluggable (`window_fn`), so SegSort can stitch raw upsampled embeddings or
per-window k-NN votes with the same tiling.
"""
import math
import weakref

import numpy as np
import tensorflow as tf

# Legacy (TF1) bilinear resize, Q-A13: one implementation for the whole project.
from common.models.layers import resize_bilinear_legacy


def window_ends(padded, window, stride):
    """End indices of the windows along one axis, exactly as the original computes them.

    `n = ceil((padded - window) / stride) + 1`, ends = `np.linspace(window, padded, n, dtype=np.int32)` (the int32
    cast truncates); window k covers [ends[k] - window, ends[k]).

    Args:
      padded: axis length after padding (>= window).
      window: window length.
      stride: nominal stride (the real spacing is spread evenly so the last window ends at `padded`).
    Returns:
      int32 array [n].
    """
    padded, window, stride = int(padded), int(window), int(stride)
    if padded < window:
        raise ValueError(f'padded length {padded} is smaller than the window {window}; pad the image first')
    if stride <= 0:
        raise ValueError(f'--strides must be positive, got {stride}')
    count = math.ceil(1.0 * (padded - window) / stride) + 1
    return np.linspace(window, padded, count, dtype=np.int32)


def pad_to_window(image, input_size):
    """Zero-pads a mean-subtracted image bottom/right to at least the window size (0 = the mean colour).

    Args:
      image: float array [H, W, 3].
      input_size: (in_h, in_w).
    Returns:
      float32 array [max(H, in_h), max(W, in_w), 3].
    """
    image = np.asarray(image, np.float32)
    height, width = image.shape[:2]
    padded = np.zeros((max(height, input_size[0]), max(width, input_size[1])) + image.shape[2:], np.float32)
    padded[:height, :width] = image
    return padded


def window_boxes(padded_hw, input_size, strides):
    """All windows of a padded canvas in the original's order (rows outer, columns inner).

    Returns:
      list of (start_h, end_h, start_w, end_w).
    """
    ends_h = window_ends(padded_hw[0], input_size[0], strides[0])
    ends_w = window_ends(padded_hw[1], input_size[1], strides[1])
    return [(int(eh) - input_size[0], int(eh), int(ew) - input_size[1], int(ew)) for eh in ends_h for ew in ends_w]


def softmax_probabilities(outputs, window_size):
    """Default window function of `inference.py`: softmax(legacy_bilinear(logits, window)).

    Args:
      outputs: logits [B, h/8, w/8, C].
      window_size: (in_h, in_w).
    Returns:
      float32 array [B, in_h, in_w, C].
    """
    return tf.nn.softmax(resize_bilinear_legacy(outputs, window_size), axis=-1).numpy()


def upsampled_outputs(outputs, window_size):
    """Window function for SegSort stitching: raw outputs upsampled (legacy bilinear), no softmax (spec 7.5).

    Returns:
      float32 array [B, in_h, in_w, C].
    """
    return resize_bilinear_legacy(outputs, window_size).numpy()


_WRAPPED_MODELS = weakref.WeakKeyDictionary()


def as_predict_fn(model_or_fn):
    """Wraps a Keras model (inference mode) or passes a callable through.

    Args:
      model_or_fn: keras.Model, or any callable images [B, h, w, 3] -> outputs [B, h', w', C].
    Returns:
      a callable returning a tensor/array.
    """
    import keras
    if isinstance(model_or_fn, keras.Model):
        model = model_or_fn
        wrapped = _WRAPPED_MODELS.get(model)
        if wrapped is None:
            # One trace per window size; the batch (number of windows) varies per image. The closure holds a
            # weak reference so the cache does not keep the model alive.
            model_ref = weakref.ref(model)
            wrapped = tf.function(lambda images: model_ref()(images, training=False), reduce_retracing=True)
            _WRAPPED_MODELS[model] = wrapped
        return wrapped
    if not callable(model_or_fn):
        raise TypeError(f'expected a keras.Model or a callable, got {type(model_or_fn).__name__}')
    return model_or_fn


def sliding_window_scores(image, predict_fn, input_size, strides, num_classes, ignore_label=255,
                          batch_windows=True, init_with_zero=False, average=False, window_fn=None,
                          max_windows_per_call=None):
    """Accumulated window scores of one image, cropped to its size (spec 5.1; 5.2 per pass with `average`).

    Args:
      image: float array [H, W, 3], mean-subtracted RGB.
      predict_fn: keras.Model or callable windows [B, in_h, in_w, 3] -> outputs [B, in_h/8, in_w/8, C'].
      input_size: (in_h, in_w) window size (PSPNet: square, multiple of 48, Q-A15).
      strides: (stride_h, stride_w).
      num_classes: channels of the accumulator (= channels returned by `window_fn`).
      ignore_label: initial accumulator value (faithful: 255, Q-A14; argmax-neutral offset).
      batch_windows: run all windows of the image in one `predict_fn` call (same maths, faster); False = one
        window per call like the original.
      init_with_zero: initialise the accumulator with 0 instead of `ignore_label` (clean scores).
      average: divide by the per-pixel window count after summing (inference_msc.py): `(init + sum) / count`.
      window_fn: `window_fn(outputs, (in_h, in_w)) -> [B, in_h, in_w, num_classes]` numpy, what each window
        adds; default `softmax_probabilities`. SegSort: `upsampled_outputs` or per-window votes.
      max_windows_per_call: with `batch_windows`, cap on windows per call (memory); None = all.
    Returns:
      float32 array [H, W, num_classes].
    """
    image = np.asarray(image, np.float32)
    if image.ndim != 3:
        raise ValueError(f'image must be [H, W, 3], got shape {image.shape}')
    input_size = tuple(int(v) for v in input_size)
    predict_fn = as_predict_fn(predict_fn)
    window_fn = window_fn or softmax_probabilities
    height, width = image.shape[:2]
    padded = pad_to_window(image, input_size)
    boxes = window_boxes(padded.shape[:2], input_size, strides)

    acc = np.full(padded.shape[:2] + (num_classes,), 0.0 if init_with_zero else float(ignore_label), np.float32)
    count = np.zeros(padded.shape[:2], np.float32)
    chunk = len(boxes) if batch_windows else 1
    if batch_windows and max_windows_per_call:
        chunk = max(1, int(max_windows_per_call))
    for first in range(0, len(boxes), chunk):
        group = boxes[first:first + chunk]
        windows = np.stack([padded[sh:eh, sw:ew] for sh, eh, sw, ew in group])
        contributions = np.asarray(window_fn(predict_fn(windows), input_size), np.float32)
        if contributions.shape[-1] != num_classes:
            raise ValueError(f'window outputs have {contributions.shape[-1]} channels, expected num_classes='
                             f'{num_classes}')
        # Sequential adds in the original's window order keep float32 sums identical.
        for (sh, eh, sw, ew), contribution in zip(group, contributions):
            acc[sh:eh, sw:ew] += contribution
            count[sh:eh, sw:ew] += 1
    if average:
        acc /= count[..., np.newaxis]
    return acc[:height, :width]


def sliding_window_predict(image, predict_fn, input_size, strides, num_classes, ignore_label=255,
                           batch_windows=True, init_with_zero=False, window_fn=None, return_scores=False,
                           max_windows_per_call=None):
    """Single-scale sliding-window prediction of `inference.py` (spec 5.1).

    Args: as `sliding_window_scores` (without `average`).
    Returns:
      uint8 array [H, W] (argmax over classes), or (prediction, scores float32 [H, W, C]) with
      `return_scores`. Scores include the `ignore_label` offset unless `init_with_zero`.

    Example:
      pred = sliding_window_predict(image - IMG_MEAN, model, (480, 480), (320, 320), 21)
    """
    scores = sliding_window_scores(image, predict_fn, input_size, strides, num_classes, ignore_label=ignore_label,
                                   batch_windows=batch_windows, init_with_zero=init_with_zero,
                                   window_fn=window_fn, max_windows_per_call=max_windows_per_call)
    prediction = np.argmax(scores, axis=-1).astype(np.uint8)
    return (prediction, scores) if return_scores else prediction
