"""Affinities between feature vectors of pixel pairs (PSA `network/resnet38_aff.Net.forward`).

aff[n, d, p] = exp(-mean_c |f[to_d(p)] - f[from(p)]|) over the half-disk pairs of `affinitynet.pairs`. The pairs
are taken as shifted windows of the feature map (no gather), which keeps the op differentiable and cheap.
"""
import numpy as np
import tensorflow as tf

from affinitynet import pairs


def affinity_from_features(features, radius=5, to_dense=False):
    """Pair affinities of a feature map.

    Args:
      features: float [N, H, W, C] (f9 after ELU).
      radius: pair radius (5 in PSA).
      to_dense: return the [H*W, H*W] symmetric matrix with unit diagonal of image 0 (the original's
        `forward(x, to_dense=True)`, batch 1) instead of the sparse [N, D, P] affinities.
    Returns:
      float32 [N, D, P] (P = (H - r + 1)(W - 2r + 2), row-major) or [H*W, H*W].
    """
    features = tf.convert_to_tensor(features, tf.float32)
    height, width = int(features.shape[1]), int(features.shape[2])
    rf = radius - 1
    rows, cols = pairs.from_region(radius, (height, width))
    directions = pairs.search_directions(radius)
    if rows <= 0 or cols <= 0:  # no pair fits (the original's empty index lists): no affinities, identity walk
        aff = tf.zeros([tf.shape(features)[0], len(directions), 0])
        return sparse_to_dense(aff[0], radius, (height, width)) if to_dense else aff
    origin = features[:, :rows, rf:rf + cols, :]
    diffs = [tf.reduce_mean(tf.abs(features[:, dy:dy + rows, rf + dx:rf + dx + cols, :] - origin), axis=-1)
             for dy, dx in directions]
    aff = tf.exp(-tf.reshape(tf.stack(diffs, axis=1), [-1, len(directions), rows * cols]))
    if not to_dense:
        return aff
    return sparse_to_dense(aff[0], radius, (height, width))


def sparse_to_dense(aff, radius, size):
    """[H*W, H*W] symmetric affinity matrix with unit diagonal from [D, P] pair affinities (zeros elsewhere)."""
    height, width = size
    ind_from, ind_to = pairs.get_indices_of_pairs(radius, size)
    num_dirs = len(pairs.search_directions(radius))
    ind_from = np.tile(ind_from, num_dirs)
    area = height * width
    diagonal = np.arange(area, dtype=np.int64)
    indices = np.concatenate([np.stack([ind_from, ind_to], 1), np.stack([diagonal, diagonal], 1),
                              np.stack([ind_to, ind_from], 1)])
    values = tf.reshape(tf.convert_to_tensor(aff, tf.float32), [-1])
    values = tf.concat([values, tf.ones([area]), values], axis=0)
    return tf.scatter_nd(indices, values, [area, area])
