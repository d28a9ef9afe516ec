"""Random walk of the CAMs through the AffinityNet transition matrix (PSA `infer_aff.py`).

Two implementations of the same walk cam_rw = cam_vec @ T^(2^logt), T = A^beta / colsum(A^beta):

- `dense` (the original): forms the [N, N] transition matrix (N = feature pixels) and squares it `logt` times,
  O(N^3 logt) time and O(N^2) memory.
- `sparse`: A has non-zeros only within the radius-r disk (69 offsets for r = 5), so each step of the walk is a
  69-point stencil on the [h, w, 21] CAM grid: the CAMs are propagated 2^logt times through shifted windows,
  O(N * 69 * 2^logt) time and O(N * 69) memory, compiled with XLA. Same result up to float rounding.
"""
import functools

import numpy as np
import tensorflow as tf

from affinitynet import pairs
from affinitynet.data import FEATURE_STRIDE, block_mean

NUM_CLASSES = 21  # background + 20 VOC classes
IMPLEMENTATIONS = ('dense', 'sparse')


def cam_with_background(cam_keys, cam_values, alpha, num_classes=NUM_CLASSES):
    """[H, W, num_classes] CAM stack: channel k+1 = CAM of class k (absent classes 0), channel 0 =
    (1 - max of the class channels)^alpha.

    Args:
      cam_keys: [k] class indices (0..19); cam_values: [H, W, k] CAMs in the same order.
    """
    cam_values = np.asarray(cam_values, np.float32)
    if cam_values.ndim != 3 or cam_values.shape[-1] != len(cam_keys):
        raise ValueError(f'cam_values must be [H, W, {len(cam_keys)}] for {len(cam_keys)} keys, '
                         f'got shape {cam_values.shape}')
    cam_full = np.zeros(cam_values.shape[:2] + (num_classes,), np.float32)
    for i, key in enumerate(np.asarray(cam_keys).reshape(-1)):
        cam_full[..., int(key) + 1] = cam_values[..., i]
    cam_full[..., 0] = np.power(1 - np.max(cam_full[..., 1:], axis=-1), np.float32(alpha))
    return cam_full


def offsets(radius):
    """Stencil offsets (dy, dx) of the full radius-r disk: the centre, the half-disk directions and their
    mirror images (69 for r = 5)."""
    half = pairs.search_directions(radius)
    return [(0, 0)] + half + [(-dy, -dx) for dy, dx in half]


def stencil_weights_from_dense(aff_dense, size, radius=5):
    """[h, w, K] weights W[y, x, k] = A[(y, x) + offset_k, (y, x)] of a dense [h*w, h*w] affinity matrix."""
    height, width = size
    ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing='ij')
    index_pairs, valid = [], []
    for dy, dx in offsets(radius):
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
        index_pairs.append(np.stack([np.where(inside, ny * width + nx, 0), ys * width + xs], -1))
        valid.append(inside)
    index_pairs = np.stack(index_pairs, axis=2)  # [h, w, K, 2]
    weights = tf.gather_nd(tf.convert_to_tensor(aff_dense, tf.float32), index_pairs)
    return weights * np.stack(valid, axis=2).astype(np.float32)


def stencil_weights_from_sparse(aff, size, radius=5):
    """[h, w, K] stencil weights (as `stencil_weights_from_dense`) straight from the [D, P] (or [1, D, P])
    pair affinities of `affinity_from_features`, without the dense matrix."""
    height, width = size
    rf = radius - 1
    rows, cols = pairs.from_region(radius, size)
    directions = pairs.search_directions(radius)
    if rows <= 0 or cols <= 0:  # no pairs: only the unit diagonal
        return tf.concat([tf.ones([height, width, 1]), tf.zeros([height, width, 2 * len(directions)])], -1)
    aff = tf.reshape(tf.convert_to_tensor(aff, tf.float32), [len(directions), rows, cols])
    grid = tf.pad(aff, [[0, 0], [0, height - rows], [rf, width - rf - cols]])  # [D, h, w]: as "from" pixel
    padded = tf.pad(grid, [[0, 0], [rf, rf], [rf, rf]])
    forward, backward = [], []
    for d, (dy, dx) in enumerate(directions):
        forward.append(grid[d])
        backward.append(padded[d, rf - dy:rf - dy + height, rf - dx:rf - dx + width])  # as "to" pixel
    return tf.stack([tf.ones([height, width])] + forward + backward, axis=-1)


@functools.lru_cache(maxsize=None)
def _stencil_walk(radius):
    """XLA-compiled walk for one radius: (cam [h, w, C], weights [h, w, K], beta, steps) -> cam after steps."""
    stencil = offsets(radius)
    rf = radius - 1

    @tf.function(jit_compile=True)
    def walk(cam, weights, beta, steps):
        weights = tf.pow(weights, beta)
        weights = weights / tf.reduce_sum(weights, axis=-1, keepdims=True)
        height, width = tf.shape(cam)[0], tf.shape(cam)[1]

        def step(i, current):
            padded = tf.pad(current, [[rf, rf], [rf, rf], [0, 0]])
            out = tf.zeros_like(current)
            for k, (dy, dx) in enumerate(stencil):
                window = tf.slice(padded, [rf + dy, rf + dx, 0], [height, width, -1])
                out += window * weights[:, :, k:k + 1]
            # the dynamic slices lose the static shape; a single channel (bg only: the image's CAMs are all
            # zero) would otherwise come out of the broadcast as None and fail the loop's shape check
            return i + 1, tf.ensure_shape(out, current.shape)

        _, cam = tf.while_loop(lambda i, _: i < steps, step, [tf.constant(0), cam])
        return cam

    return walk


def propagate_sparse(cam_pooled, weights, beta, logt, radius=5):
    """cam_vec @ T^(2^logt) as 2^logt stencil steps. cam_pooled [h, w, C], weights [h, w, K] -> [h, w, C]."""
    return _stencil_walk(radius)(tf.convert_to_tensor(cam_pooled, tf.float32), weights,
                                 tf.constant(float(beta)), tf.constant(2 ** int(logt)))


def propagate_dense(cam_pooled, aff_dense, beta, logt):
    """The original dense walk. Returns (cam_rw [h, w, C], aff_pow [N, N], trans_mat [N, N] = T^(2^logt))."""
    aff_pow = tf.pow(tf.convert_to_tensor(aff_dense, tf.float32), float(beta))
    trans_mat = aff_pow / tf.reduce_sum(aff_pow, axis=0, keepdims=True)
    for _ in range(int(logt)):
        trans_mat = tf.linalg.matmul(trans_mat, trans_mat)
    height, width, channels = cam_pooled.shape
    cam_vec = tf.transpose(tf.reshape(tf.convert_to_tensor(cam_pooled), [height * width, channels]))
    cam_rw = tf.linalg.matmul(cam_vec, trans_mat)  # [C, N]
    return tf.reshape(tf.transpose(cam_rw), [height, width, channels]), aff_pow, trans_mat


def random_walk(aff_dense, cam_keys, cam_values, alpha, beta, logt, impl='dense', radius=5):
    """Random-walk labels of one image (PSA `infer_aff.py` per-image body).

    Args:
      aff_dense: the affinity of the ceil(H/8) x ceil(W/8) feature grid: dense [N, N] (the original's
        `forward(x, to_dense=True)`), or, for impl='sparse', also the [D, P] / [1, D, P] pair affinities.
      cam_keys: [k] class indices of the CAM dict; cam_values: [H, W, k] CAMs (the `--out_cam` dict's values).
      alpha: background power (16); beta: affinity power (8); logt: the walk has 2^logt steps (8).
      impl: 'dense' (the original) or 'sparse' (stencil walk, no dense matrix).
      radius: pair radius of the affinities (sparse only).
    Returns:
      dict: label uint8 [H, W], cam_rw float32 [1, Hp, Wp, 21] (upsampled, padded size), cam_rw_lowres
      [1, h, w, 21], cam_pooled [h, w, 21]; dense also aff_pow and trans_mat [N, N] (T^(2^logt)).
    """
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f'--rw_impl must be one of {IMPLEMENTATIONS}, got {impl!r}')
    cam_full = cam_with_background(cam_keys, cam_values, alpha)
    height, width = cam_full.shape[:2]
    grid = (-(-height // FEATURE_STRIDE), -(-width // FEATURE_STRIDE))
    cam_pooled = block_mean(cam_full)  # zero padding to multiples of 8 counts in the mean, as the original
    aff_shape = tuple(np.shape(aff_dense))
    num_nodes = grid[0] * grid[1]
    result = {'cam_pooled': cam_pooled}
    if impl == 'dense':
        if aff_shape != (num_nodes, num_nodes):
            raise ValueError(f'dense affinity must be [{num_nodes}, {num_nodes}] for a {height}x{width} CAM '
                             f'(feature grid {grid[0]}x{grid[1]}), got {aff_shape}')
        cam_rw, aff_pow, trans_mat = propagate_dense(cam_pooled, aff_dense, beta, logt)
        result.update(aff_pow=aff_pow.numpy(), trans_mat=trans_mat.numpy())
    else:
        if aff_shape == (num_nodes, num_nodes):
            weights = stencil_weights_from_dense(aff_dense, grid, radius)
        else:
            rows, cols = pairs.from_region(radius, grid)
            expected = len(pairs.search_directions(radius)) * max(rows, 0) * max(cols, 0)
            if int(np.prod(aff_shape)) != expected:
                raise ValueError(f'sparse affinity of a {grid[0]}x{grid[1]} feature grid (radius {radius}) must '
                                 f'have {expected} values, got shape {aff_shape}')
            weights = stencil_weights_from_sparse(aff_dense, grid, radius)
        # the walk is linear per channel: absent classes (all-zero channels) stay zero, so only the present
        # ones are propagated (bg + the image's classes instead of 21)
        active = np.flatnonzero(np.any(cam_pooled != 0, axis=(0, 1)))
        walked = propagate_sparse(cam_pooled[..., active], weights, beta, logt, radius)
        cam_rw = tf.scatter_nd(active[:, None], tf.transpose(walked, [2, 0, 1]),
                               [cam_pooled.shape[-1], grid[0], grid[1]])
        cam_rw = tf.transpose(cam_rw, [1, 2, 0])
    cam_rw_lowres = cam_rw[tf.newaxis]
    cam_rw_up = tf.image.resize(cam_rw_lowres, [grid[0] * FEATURE_STRIDE, grid[1] * FEATURE_STRIDE],
                                method='bilinear')  # = nn.Upsample(bilinear, align_corners=False)
    label = tf.argmax(cam_rw_up[0], axis=-1).numpy()[:height, :width].astype(np.uint8)
    result.update(label=label, cam_rw=cam_rw_up.numpy(), cam_rw_lowres=cam_rw_lowres.numpy())
    return result
