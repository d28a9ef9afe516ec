"""Gated CRF losses of A2GNN (after Obukhov et al., "Gated CRF Loss", 2019).

Two variants, both built on the same Gaussian kernels over (xy / sigma_xy, rgb / sigma_rgb) features in a square
window (zero-padded neighbours, centre weight 0):

- `gated_crf_regularizer` (`model_fts_gated_regularized.py`): the gated affinity network's regulariser,
  sum(K * aff_dis * mask) / sum(mask), pulling the feature distance of similar-looking neighbours to 0.
- `gated_crf_loss` (`model_loss_semseg_gatedcrf.py`): the Potts loss on the GNN's softmax output,
  [sum K - sum_c y_c (K * unfold(y_c))] / denom.

Layouts are channels-last: predictions and modalities [N, H, W, C]; kernels and masks [N, H, W, 1, d, d].
"""
import numpy as np
import tensorflow as tf

from a2gnn.ops import unfold, window_offsets


def _adaptive_avg_pool(x, height, width):
    """torch `F.adaptive_avg_pool2d(x, (height, width))` for [N, H, W, C] x; exact for integer ratios (the only
    case the originals use: identity or a whole downsampling factor)."""
    x = tf.convert_to_tensor(x, tf.float32)
    in_h, in_w = int(x.shape[1]), int(x.shape[2])
    if (in_h, in_w) == (height, width):
        return x
    if in_h % height or in_w % width:
        raise ValueError(f'adaptive average pooling from {in_h}x{in_w} to {height}x{width} needs whole factors')
    fh, fw = in_h // height, in_w // width
    return tf.nn.avg_pool2d(x, (fh, fw), (fh, fw), 'VALID')


def get_mesh(n, height, width):
    """xy features [N, H, W, 2]: channel 0 = x (column index), channel 1 = y (row index), float32."""
    xs = tf.range(width, dtype=tf.float32)
    ys = tf.range(height, dtype=tf.float32)
    yy, xx = tf.meshgrid(ys, xs, indexing='ij')
    mesh = tf.stack([xx, yy], axis=-1)
    return tf.tile(mesh[None], [n, 1, 1, 1])


def create_kernels_from_features(features, radius):
    """exp(-0.5 * sum_c (unfold(F) - F)^2) with the centre set to 0.

    Args:
      features: [N, H, W, C] float.
    Returns:
      [N, H, W, 1, d, d] kernels.
    """
    features = tf.convert_to_tensor(features, tf.float32)
    neighbours = unfold(features, radius)  # [N, H, W, C, d, d]
    diff = neighbours - features[..., None, None]
    kernels = tf.exp(-0.5 * tf.reduce_sum(tf.square(diff), axis=3, keepdims=True))
    diameter = 2 * radius + 1
    centre = tf.one_hot(radius * diameter + radius, diameter * diameter, on_value=0.0, off_value=1.0)
    return kernels * tf.reshape(centre, (diameter, diameter))


def create_kernels(kernels_desc, radius, sample, n, height, width):
    """Weighted sum of Gaussian kernels, one per descriptor.

    Args:
      kernels_desc: list of dicts {'weight': w, 'xy': sigma_xy, '<modality>': sigma, ...} (the originals use
        [{'weight': 1, 'xy': 6, 'rgb': 0.1}]).
      radius: window radius.
      sample: dict modality -> [N, H', W', C] tensor (area-downsampled to height x width when larger).
      n, height, width: batch size and prediction size.
    Returns:
      [N, H, W, 1, d, d] kernels.
    """
    kernels = None
    for i, desc in enumerate(kernels_desc):
        features = []
        for modality, sigma in desc.items():
            if modality == 'weight':
                continue
            if modality == 'xy':
                feature = get_mesh(n, height, width)
            else:
                if modality not in sample:
                    raise ValueError(f'modality {modality!r} of kernel descriptor {i} is missing from the sample')
                feature = _adaptive_avg_pool(sample[modality], height, width)
            features.append(feature / sigma)
        kernel = desc['weight'] * create_kernels_from_features(tf.concat(features, axis=-1), radius)
        kernels = kernel if kernels is None else kernels + kernel
    return kernels


def gated_crf_regularizer(aff_dis, kernels_desc, radius, sample, height_input, width_input, mask_src):
    """Gated CRF regulariser of the gated affinity network: sum(K * aff_dis * mask_src) / sum(mask_src).

    Args:
      aff_dis: [N, H, W, d, d] feature distances (the head's aff_crf).
      kernels_desc, radius, sample: as in `create_kernels`.
      height_input, width_input: full-resolution size of the modalities (kept for the original's signature).
      mask_src: [N, H, W, 1, d, d] float mask (0 = padded or out-of-bounds pair); the sum is not clamped.
    Returns:
      {'loss': scalar}.
    """
    del height_input, width_input
    aff_dis = tf.convert_to_tensor(aff_dis, tf.float32)
    n, height, width = int(aff_dis.shape[0]), int(aff_dis.shape[1]), int(aff_dis.shape[2])
    kernels = create_kernels(kernels_desc, radius, sample, n, height, width)[:, :, :, 0]
    mask = tf.convert_to_tensor(mask_src, tf.float32)[:, :, :, 0]
    return {'loss': tf.reduce_sum(kernels * aff_dis * mask) / tf.reduce_sum(mask)}


def _resize_fix_mask(mask, name, n, height, width):
    mask = tf.convert_to_tensor(mask, tf.float32)
    if mask.shape.rank != 4 or int(mask.shape[0]) != n or int(mask.shape[-1]) != 1:
        raise ValueError(f'{name} mask must be [N={n}, H, W, 1] float32, got shape {mask.shape}')
    mask = _adaptive_avg_pool(mask, height, width)
    mask = tf.where(tf.math.is_nan(mask), 0.0, mask)
    return tf.where(mask < 1.0, 0.0, mask)  # edges of the mask after the area downsampling


def gated_crf_loss(y_hat_softmax, kernels_desc, radius, sample, height_input, width_input, mask_src=None,
                   mask_dst=None, compatibility=None):
    """Gated CRF loss on class probabilities (Potts model unless a compatibility matrix is given).

    Args:
      y_hat_softmax: [N, H, W, C] probabilities.
      kernels_desc, radius, sample: as in `create_kernels`.
      height_input, width_input: full-resolution size; must be whole multiples of H, W with the same aspect.
      mask_src, mask_dst: optional [N, H', W', 1] float masks (area-downsampled; values < 1 become 0); each sets
        the denominator to max(sum(mask), 1) (mask_dst's wins), otherwise denom = N * H * W.
      compatibility: optional [C, C] non-negative matrix with zero diagonal. The original's branch cannot run
        (it calls `.diag.sum()`); this implements what it intends.
    Returns:
      {'loss': scalar}.
    """
    y = tf.convert_to_tensor(y_hat_softmax, tf.float32)
    n, height, width, num_classes = (int(s) for s in y.shape)
    if width_input % width or height_input % height or width_input * height != height_input * width:
        raise ValueError(f'input size {width_input}x{height_input} is not a whole multiple of the prediction '
                         f'size {width}x{height}')
    kernels = create_kernels(kernels_desc, radius, sample, n, height, width)  # [N, H, W, 1, d, d]
    denom = tf.constant(float(n * height * width))
    if mask_src is not None:
        mask_src = _resize_fix_mask(mask_src, 'source', n, height, width)
        denom = tf.maximum(tf.reduce_sum(mask_src), 1.0)
        kernels = kernels * unfold(mask_src, radius)
    if mask_dst is not None:
        mask_dst = _resize_fix_mask(mask_dst, 'destination', n, height, width)
        denom = tf.maximum(tf.reduce_sum(mask_dst), 1.0)
        kernels = kernels * mask_dst[..., None, None]
    if compatibility is None:
        return {'loss': potts_loss(y, window_matrix(kernels), tf.reduce_sum(kernels), denom)}
    compatibility = tf.convert_to_tensor(compatibility, tf.float32)
    if compatibility.shape != (num_classes, num_classes):
        raise ValueError(f'compatibility must be [{num_classes}, {num_classes}], got {compatibility.shape}')
    compat = (num_classes - 1) * compatibility / tf.maximum(
        tf.reduce_sum(tf.abs(compatibility), axis=1, keepdims=True), 1e-12)
    flat_y = tf.reshape(y, (-1, num_classes))
    product = tf.sparse.sparse_dense_matmul(window_matrix(kernels), flat_y)
    return {'loss': tf.reduce_sum(compat * tf.matmul(flat_y, product, transpose_a=True)) / denom}


def window_matrix(kernels):
    """The window kernels as a sparse [N*H*W, N*H*W] matrix: row p holds K(p, q) at column q for every
    in-image neighbour q of pixel p (row-major pixel order; out-of-image slots, which only meet the zero
    padding, are left out).

    sum_q K(p, q) y_c(q) is then one sparse-dense product: neither the unfolded [N, H, W, C, d, d] prediction nor
    per-offset shifted copies exist, and the gradient is the transposed product.

    Args:
      kernels: [N, H, W, 1, d, d] (from `create_kernels`, masks applied).
    Returns:
      tf.sparse.SparseTensor.
    """
    n, height, width = (int(s) for s in kernels.shape[:3])
    diameter = int(kernels.shape[-1])
    radius = diameter // 2
    pixels = np.arange(n * height * width).reshape(n, height, width)
    ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing='ij')
    offsets = np.array(window_offsets(radius))
    ny, nx = ys[..., None] + offsets[:, 0], xs[..., None] + offsets[:, 1]  # [H, W, K]
    inside = np.broadcast_to((ny >= 0) & (ny < height) & (nx >= 0) & (nx < width), (n, height, width, len(offsets)))
    batch = np.arange(n)[:, None, None, None]
    rows = np.broadcast_to(pixels[..., None], inside.shape)[inside]
    cols = (batch * height * width + ny[None] * width + nx[None])[inside]
    positions = np.flatnonzero(inside)  # kernels flattened [N, H, W, K]; rows ascending, columns ascending
    values = tf.gather(tf.reshape(tf.convert_to_tensor(kernels, tf.float32), (-1,)), positions)
    return tf.sparse.SparseTensor(np.stack([rows, cols], axis=1).astype(np.int64), values,
                                  (n * height * width, n * height * width))


def potts_loss(y, kernel_matrix, kernel_sum, denom):
    """Potts gated CRF loss [sum K - sum_c sum_p y_c(p) sum_q K(p, q) y_c(q)] / denom.

    Args:
      y: [N, H, W, C] probabilities; kernel_matrix: `window_matrix(kernels)`; kernel_sum: sum of all kernel
        entries (out-of-image slots included, as the original); denom: scalar.
    Returns:
      scalar loss.
    """
    flat_y = tf.reshape(y, (-1, int(y.shape[-1])))
    product = tf.sparse.sparse_dense_matmul(kernel_matrix, flat_y)
    return (kernel_sum - tf.reduce_sum(product * flat_y)) / denom


def potts_loss_unfolded(y, kernels, denom):
    """The original's formulation of `potts_loss`: the prediction unfolded to [N, H, W, C, d, d], multiplied by
    the kernels and summed over the window (reference and dense-benchmark transcription only: it materialises
    (2r+1)^2 copies of y and of its gradient)."""
    radius = int(kernels.shape[-1]) // 2
    product = tf.reduce_sum(kernels * unfold(y, radius), axis=(4, 5))  # [N, H, W, C]
    return (tf.reduce_sum(kernels) - tf.reduce_sum(product * y)) / denom
