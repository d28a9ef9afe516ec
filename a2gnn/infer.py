"""Final pseudo labels of A2GNN (`mytool.infer_nocrf` and the per-image tails of the box / others scripts)."""
import numpy as np
import tensorflow as tf

from a2gnn.losses import resize_bilinear
from affinitynet.random_walk import random_walk
from common.crf import crf_inference_inf


def infer_nocrf(model, features, adj, f_h, f_w, aff_cropping=None):
    """Eval-mode GNN logits as a grid: float32 [f_h, f_w, C] (no dropout)."""
    logits, _ = model(features, adj, aff_cropping, training=False)
    return tf.reshape(logits, (f_h, f_w, -1))


def _random_walk_cams(aff_dense, cam_keys, cam_values, feature_size, alpha, beta, logt):
    """others.py's walk of the SEAM CAMs on the node graph, through `affinitynet.random_walk` (same steps as PSA:
    A^beta, column-normalised, squared logt times; bg = (1-max)^alpha; 8x8 mean pooling of the zero-padded CAMs;
    bilinear upsampling to the padded size). Returns (trans_mat [N, N], cam_rw [H, W, 21] cropped)."""
    height, width = np.shape(cam_values)[:2]
    if -(-height // 8) != feature_size[0] or -(-width // 8) != feature_size[1]:
        raise ValueError(f'CAM size {height}x{width} does not match the feature grid {feature_size}')
    walk = random_walk(aff_dense, np.asarray(cam_keys).reshape(-1), cam_values, alpha, beta, logt)
    return walk['trans_mat'], walk['cam_rw'][0, :height, :width]


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
        trans_mat, cam_rw = _random_walk_cams(aff_dense, cam_keys, cam_values, (f_h, f_w), alpha, beta, logt)
        probs = probs + rw_weight * cam_rw
        probs = probs / np.sum(probs, axis=-1, keepdims=True)
        out.update(trans_mat=trans_mat, cam_rw_pred=cam_rw)
    out['pred_probs'] = probs
    if crf:
        refined = crf_inference_inf(img.astype(np.uint8), np.transpose(probs, (2, 0, 1)), labels=num_class)
        out['label'] = np.argmax(refined, axis=0).astype(np.uint8)
    else:
        out['label'] = np.argmax(probs, axis=-1).astype(np.uint8)
    return out


def pad_to_stride(x, stride=8, value=0):
    """Pads [H, W, ...] at the bottom and right to multiples of `stride`."""
    x = np.asarray(x)
    pad_h, pad_w = -x.shape[0] % stride, -x.shape[1] % stride
    return np.pad(x, [(0, pad_h), (0, pad_w)] + [(0, 0)] * (x.ndim - 2), constant_values=value)


def pseudo_label(net, img, seed, mode, radius, epochs, lr, boxes=None, box_class=None, rw=False, cam=None,
                 alpha=6.0, beta=8, logt=6, rw_weight=3, hidden=256, dropout=0.5, weight_decay=5e-4,
                 graph='sparse', random_seed=0, log=print):
    """One image of train_infer_A2GNN_box.py / _others.py: gated affinity graph, per-image GNN training, final
    label.

    Args:
      net: GatedAffinityNet; img: uint8 [H, W, 3]; seed: uint8 [H, W] (0 bg, 1..20, 255 unlabelled).
      mode: 'box' (seed padded with 255; boxes, box_class needed) or 'others' (padded with 0).
      rw, cam: random-walk fusion with the SEAM CAMs, cam = (keys, values [H, W, k]).
      graph: 'sparse' (window attention, default) or 'dense' (the original's N x N matrices).
    Returns:
      dict of `final_labels` plus 'history' (per-step losses).
    """
    from a2gnn.graph import adjacency, generate_aff, generate_aff_cropping, neighbour_graph, node_features
    from a2gnn.train import train_gnn
    from common.data.psa_transforms import normalize
    img = np.asarray(img, np.uint8)
    padded = pad_to_stride(normalize(img, 'resnet38'))
    features, aff, _ = net(padded[None], radius=radius, training=False)
    f_h, f_w = int(features.shape[1]), int(features.shape[2])
    x = node_features(features)
    if graph == 'sparse':
        adj, aff_cropping = neighbour_graph(aff[0], radius), None
    else:
        adj = adjacency(generate_aff(f_h, f_w, aff[0], radius))
        aff_cropping = generate_aff_cropping(f_h, f_w, radius)
    sample = {'rgb': resize_bilinear(padded[None], (f_h, f_w))}
    seed_padded = pad_to_stride(seed, value=255 if mode == 'box' else 0)[None].astype(np.int64)
    model, history = train_gnn(x, adj, seed_padded, f_h, f_w, mode, sample, boxes, box_class, epochs, lr,
                               weight_decay, hidden, dropout, random_seed=random_seed, aff_cropping=aff_cropping,
                               log=log)
    logits, _ = model(x, adj, aff_cropping, training=False)
    aff_dense = generate_aff(f_h, f_w, aff[0], radius) if rw else None
    keys, values = cam if rw else (None, None)
    out = final_labels(logits, img, (f_h, f_w), rw, aff_dense, keys, values, alpha, beta, logt, rw_weight)
    out['history'] = history
    return out
