"""Class activation maps of PSA `infer_cls.py`: multi-scale + flip fusion, background scores, la/ha CRF
dictionaries, and their files in the original formats (pickled-dict `.npy`, uint8 PNG), so results can be
exchanged with the PyTorch code.

Layouts are channels-last: a CAM dict's values are [H, W] maps; stacks are [H, W, k].
"""
import io
import os

import numpy as np
import tensorflow as tf

from common import crf
from common.io import atomic_write_bytes

SCALES = (1.0, 0.5, 1.5, 2.0)  # infer_cls's VOC12ClsDatasetMSF scales; each followed by its flipped copy
LOW_ALPHA, HIGH_ALPHA, RW_ALPHA = 4, 32, 16
CAM_PRED_BG = 0.2


def fuse_cams(cams, label, image_size, cam_pred_bg=CAM_PRED_BG):
    """Fuses the forward_cam outputs of the scaled and flipped inputs of one image.

    Args:
      cams: list of [1, h_i, w_i, 20] CAMs, inputs in the original order (odd entries are of flipped inputs).
      label: [20] multi-hot class label.
      image_size: (H, W) of the original image.
      cam_pred_bg: constant background score of `cam_pred` (0.2).
    Returns:
      dict: sum_cam, norm_cam [H, W, 20] float32; cam_keys [k] int64 (present classes), cam_values [H, W, k];
      cam_pred uint8 [H, W] (argmax of [bg; norm_cam], 0 = background, c+1 = class c).
    """
    label = np.asarray(label, np.float32).reshape(-1)
    height, width = (int(s) for s in image_size)
    upsampled = []
    for i, cam in enumerate(cams):
        cam = tf.convert_to_tensor(cam, tf.float32)
        if cam.shape.rank == 3:
            cam = cam[tf.newaxis]
        cam = tf.image.resize(cam, [height, width], method='bilinear')[0].numpy() * label  # align_corners=False
        upsampled.append(cam[:, ::-1] if i % 2 == 1 else cam)
    sum_cam = np.sum(upsampled, axis=0)
    norm_cam = sum_cam / (np.max(sum_cam, axis=(0, 1), keepdims=True) + 1e-5)
    keys = np.array([c for c in range(label.size) if label[c] > 1e-5], np.int64)
    bg = np.full([height, width, 1], cam_pred_bg, np.float32)
    cam_pred = np.argmax(np.concatenate([bg, norm_cam], axis=-1), axis=-1).astype(np.uint8)
    return {'sum_cam': sum_cam, 'norm_cam': norm_cam, 'cam_keys': keys, 'cam_values': norm_cam[..., keys],
            'cam_pred': cam_pred}


def crf_with_alpha(cam_keys, cam_values, alpha, img):
    """Dense CRF on [bg; CAMs] with bg = (1 - max CAM)^alpha (infer_cls `_crf_with_alpha`, CRF 3/3, 80/13/10).

    Args:
      cam_keys: [k] class indices; cam_values: [H, W, k] CAMs; alpha: background power (4 la, 32 ha);
      img: uint8 [H, W, 3] RGB image.
    Returns:
      (keys [k+1] int64 = [0, c+1 ...], crf [H, W, k+1] float32 marginals, crf_input [H, W, k+1] scores).
    """
    cam_values = np.asarray(cam_values, np.float32)
    img = np.asarray(img)
    if cam_values.shape[:2] != img.shape[:2]:
        raise ValueError(f'CAM size {cam_values.shape[:2]} differs from image size {img.shape[:2]}')
    bg = np.power(1 - np.max(cam_values, axis=-1, keepdims=True), np.float32(alpha))
    scores = np.concatenate([bg, cam_values], axis=-1)
    marginals = crf.crf_inference(img, np.transpose(scores, (2, 0, 1)), labels=scores.shape[-1])
    keys = np.concatenate([[0], np.asarray(cam_keys, np.int64).reshape(-1) + 1]).astype(np.int64)
    return keys, np.transpose(marginals, (1, 2, 0)), scores


def to_dict(keys, values):
    """{key: values[..., i]} in key order (the originals' npy dict layout)."""
    return {int(k): np.ascontiguousarray(values[..., i]) for i, k in enumerate(np.asarray(keys).reshape(-1))}


def from_dict(score_dict):
    """(keys [k] int64, values [H, W, k] float32) of a dict, in insertion order."""
    keys = np.array(list(score_dict.keys()), np.int64)
    if not len(keys):
        return keys, None
    return keys, np.stack([np.asarray(v, np.float32) for v in score_dict.values()], axis=-1)


def save_dict(path, score_dict):
    """Writes a dict as the originals' `.npy` (0-d object array, pickled) atomically."""
    buffer = io.BytesIO()
    np.save(buffer, np.array(score_dict, dtype=object), allow_pickle=True)
    return atomic_write_bytes(path, buffer.getvalue())


def load_dict(path, what='CAM'):
    """Reads an `.npy` dict written by `save_dict` or the original code; errors name the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{what} file not found: {path}')
    try:
        value = np.load(path, allow_pickle=True)
        value = value.item() if value.dtype == object else None
    except Exception as error:  # a truncated or foreign file
        raise ValueError(f'{what} file {path} is not a readable .npy dict: {error}') from error
    if not isinstance(value, dict):
        raise ValueError(f'{what} file {path} does not hold a dict of class maps')
    return value
