"""Image decoding, prediction files and the inference driver used by the AAF/SegSort inference CLIs (spec 5.3).

Predictions go to `<save_dir>/gray/<basename>` (label ids, PIL mode 'L') and `<save_dir>/color/<basename>` (RGB via
the colour map), optionally `<save_dir>/prob/<stem>.npy` (the fused scores). `basename` is
`os.path.basename(path).replace('jpg', 'png')`, which replaces EVERY 'jpg' substring (faithful, Q-A18): e.g.
`a_jpg_b.jpg` -> `a_png_b.png`; `fix_basename=True` only swaps a trailing `.jpg` extension.
"""
import os

import numpy as np

from common.infer import IMG_MEAN
from common.io import atomic_write, save_png
from common.infer.multiscale import multiscale_predict
from common.infer.sliding_window import as_predict_fn, sliding_window_predict


def prediction_basename(image_path, fix_basename=False):
    """File name of a prediction for `image_path`.

    Args:
      image_path: path of the input image.
      fix_basename: False (faithful) replaces every 'jpg' in the basename by 'png'; True replaces only a
        final '.jpg' extension.
    Returns:
      str basename.
    """
    basename = os.path.basename(image_path)
    if not fix_basename:
        return basename.replace('jpg', 'png')
    stem, ext = os.path.splitext(basename)
    return stem + '.png' if ext == '.jpg' else basename


def save_prediction(prediction, save_dir, basename, colormap, probabilities=None):
    """Writes one prediction (atomically): gray ids, colour image and optionally the scores.

    Args:
      prediction: uint8 array [H, W] of label ids.
      save_dir: output root; `gray/`, `color/` (and `prob/`) are created below it.
      basename: file name (see `prediction_basename`); images are written as PNG.
      colormap: uint8 [256, 3] table, or a name/path for `common.colormap.get_colormap`.
      probabilities: optional float array [H, W, C] saved as `prob/<stem>.npy`.
    Returns:
      dict with the written paths ('gray', 'color'[, 'prob']).
    """
    from common.colormap import get_colormap
    prediction = np.asarray(prediction)
    if prediction.ndim != 2:
        raise ValueError(f'prediction must be [H, W], got shape {prediction.shape}')
    prediction = prediction.astype(np.uint8)
    table = get_colormap(colormap) if isinstance(colormap, (str, os.PathLike)) else np.asarray(colormap, np.uint8)
    paths = {'gray': os.path.join(save_dir, 'gray', basename), 'color': os.path.join(save_dir, 'color', basename)}
    save_png(paths['gray'], prediction, 'L')
    save_png(paths['color'], table[prediction], 'RGB')
    if probabilities is not None:
        paths['prob'] = os.path.join(save_dir, 'prob', os.path.splitext(basename)[0] + '.npy')
        atomic_write(paths['prob'], lambda handle: np.save(handle, np.asarray(probabilities)))
    return paths


def load_image(image_path, img_mean=IMG_MEAN):
    """Decodes an image like the original reader: RGB, float32, minus the RGB mean (no scaling).

    Args:
      image_path: JPEG or PNG file (the format is sniffed, Q-A21).
      img_mean: RGB mean subtracted from every pixel.
    Returns:
      float32 array [H, W, 3].
    Raises:
      FileNotFoundError naming the path when the file is missing.
    """
    import tensorflow as tf
    from common.data.aaf_reader import decode_image
    if not os.path.isfile(image_path):
        raise FileNotFoundError(f'input image not found: {image_path}')
    try:
        image = decode_image(tf.io.read_file(image_path), img_mean)
    except tf.errors.InvalidArgumentError as err:
        raise ValueError(f'cannot decode image {image_path}: {err.message}') from None
    return image.numpy()


def run_inference(model_or_predict_fn, image_paths, save_dir, input_size, strides, num_classes, colormap,
                  msc=False, flip_aug=False, scale_aug=False, ignore_label=255, img_mean=IMG_MEAN,
                  save_probabilities=False, fix_basename=False, init_with_zero=False, batch_windows=True,
                  max_windows_per_call=None, window_fn=None, progress=True):
    """Predicts and saves every image of a list (AAF `inference.py` / `inference_msc.py`).

    Args:
      model_or_predict_fn: keras.Model (called with training=False) or callable windows [B, in_h, in_w, 3] ->
        logits [B, in_h/8, in_w/8, C].
      image_paths: image files (already joined with the data dir).
      save_dir: output root (gray/, color/, prob/).
      input_size: (in_h, in_w) window; strides: (stride_h, stride_w).
      num_classes: number of classes.
      colormap: uint8 [256, 3] table, or 'voc' / 'cityscapes' / path of an original `.mat` colour map.
      msc: multi-scale inference (`inference_msc.py`) with `flip_aug` / `scale_aug`; False = single scale.
      ignore_label: accumulator initial value (Q-A14); init_with_zero: start at 0 instead.
      img_mean: RGB mean subtracted after decoding.
      save_probabilities: also save the fused scores (.npy, including the faithful 255 offsets unless
        `init_with_zero`).
      fix_basename: see `prediction_basename`.
      batch_windows, max_windows_per_call, window_fn: see `sliding_window_scores`.
      progress: show a tqdm bar.
    Returns:
      list of dicts of written paths, one per image.

    Example:
      run_inference(model, ['val/a.jpg'], 'out', (480, 480), (320, 320), 21, 'voc', msc=True, flip_aug=True)
    """
    from tqdm import tqdm
    predict_fn = as_predict_fn(model_or_predict_fn)
    image_paths = list(image_paths)
    written = []
    for image_path in tqdm(image_paths, desc='inference', unit='img', disable=not progress):
        image = load_image(image_path, img_mean)
        common_kwargs = dict(ignore_label=ignore_label, batch_windows=batch_windows, init_with_zero=init_with_zero,
                             window_fn=window_fn, max_windows_per_call=max_windows_per_call, return_scores=True)
        if msc:
            prediction, scores = multiscale_predict(image, predict_fn, input_size, strides, num_classes,
                                                    flip_aug=flip_aug, scale_aug=scale_aug, **common_kwargs)
        else:
            prediction, scores = sliding_window_predict(image, predict_fn, input_size, strides, num_classes,
                                                        **common_kwargs)
        written.append(save_prediction(prediction, save_dir, prediction_basename(image_path, fix_basename),
                                       colormap, probabilities=scores if save_probabilities else None))
    return written
