"""Final pseudo labels of A2GNN (`mytool.infer_nocrf` and the per-image tails of the box / others scripts)."""
import numpy as np
import tensorflow as tf

from a2gnn.losses import resize_bilinear
from common.crf import crf_inference_inf


def infer_nocrf(model, features, adj, f_h, f_w, aff_cropping=None):
    """Eval-mode GNN logits as a grid: float32 [f_h, f_w, C] (no dropout)."""
    logits, _ = model(features, adj, aff_cropping, training=False)
    return tf.reshape(logits, (f_h, f_w, -1))


def _random_walk_cams(aff_dense, cam_keys, cam_values, feature_size, alpha, beta, logt, num_class):
    """PSA-style random walk of the SEAM CAMs on the node graph (others.py with --rw): returns
    (trans_mat [N, N], cam_rw [H, W, num_class])."""
    f_h, f_w = feature_size
    cam_values = np.asarray(cam_values, np.float32)
    height, width = cam_values.shape[:2]
    aff = tf.pow(tf.convert_to_tensor(aff_dense, tf.float32), float(beta))
    trans_mat = aff / tf.reduce_sum(aff, axis=0, keepdims=True)
    for _ in range(int(logt)):
        trans_mat = tf.matmul(trans_mat, trans_mat)
    cam_full = np.zeros((height, width, num_class), np.float32)
    for i, key in enumerate(np.asarray(cam_keys).reshape(-1).tolist()):
        cam_full[..., int(key) + 1] = cam_values[..., i]
    cam_full[..., 0] = (1 - np.max(cam_full[..., 1:], axis=-1)) ** alpha
    padded = np.pad(cam_full, ((0, 8 * f_h - height), (0, 8 * f_w - width), (0, 0)))
    pooled = tf.nn.avg_pool2d(padded[None], 8, 8, 'VALID')  # [1, f_h, f_w, C]
    cam_vec = tf.transpose(tf.reshape(pooled, (-1, num_class)))  # [C, N]
    cam_rw = tf.reshape(tf.transpose(tf.matmul(cam_vec, trans_mat)), (1, f_h, f_w, num_class))
    cam_rw = resize_bilinear(cam_rw, (8 * f_h, 8 * f_w))[0, :height, :width]
    return trans_mat, cam_rw


def final_labels(logits, img, feature_size, rw=False, aff_dense=None, cam_keys=None, cam_values=None, alpha=6.0,
                 beta=8, logt=6, rw_weight=3, crf=True):
    """Pseudo label of one image from the trained GNN's eval logits (box.py L135-145, others.py L121-178).

    The logits grid is resized straight to the unpadded image size (the originals' up-to-7-px stretch), turned
    into probabilities, optionally fused with the random walk of the SEAM CAMs (probs + rw_weight * cam_rw,
    renormalised) and refined by the dense CRF (2/3, 50/5/10).

    Args:
      logits: [f_h*f_w, C] node logits; img: uint8 [H, W, 3]; feature_size: (f_h, f_w).
      rw: fuse the random walk; then aff_dense ([N, N] node affinity of `a2gnn.graph.generate_aff`), cam_keys
        (k class indices 0..19), cam_values ([H, W, k] SEAM CAMs), alpha (bg power), beta (affinity power),
        logt (log2 of the walk length) and rw_weight are used.
      crf: run the final dense CRF (else the label is the argmax of the probabilities).
    Returns:
      dict: label uint8 [H, W], pred_probs [H, W, C] (the CRF's input), pred_resized [1, H, W, C] and with rw
      also trans_mat [N, N] and cam_rw_pred [H, W, C].
    """
    img = np.asarray(img)
    height, width = img.shape[:2]
    f_h, f_w = (int(s) for s in feature_size)
    logits = tf.convert_to_tensor(logits, tf.float32)
    num_class = int(logits.shape[-1])
    pred_resized = resize_bilinear(tf.reshape(logits, (1, f_h, f_w, num_class)), (height, width))
    probs = tf.nn.softmax(pred_resized, axis=-1)[0].numpy()
    out = {'pred_resized': pred_resized}
    if rw:
        trans_mat, cam_rw = _random_walk_cams(aff_dense, cam_keys, cam_values, (f_h, f_w), alpha, beta, logt,
                                              num_class)
        probs = probs + rw_weight * cam_rw.numpy()
        probs = probs / np.sum(probs, axis=-1, keepdims=True)
        out.update(trans_mat=trans_mat, cam_rw_pred=cam_rw)
    out['pred_probs'] = probs
    if crf:
        refined = crf_inference_inf(img.astype(np.uint8), np.transpose(probs, (2, 0, 1)), labels=num_class)
        out['label'] = np.argmax(refined, axis=0).astype(np.uint8)
    else:
        out['label'] = np.argmax(probs, axis=-1).astype(np.uint8)
    return out
