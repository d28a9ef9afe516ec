"""Neighbourhood ops shared by the gated affinity head, its loss and both gated CRF losses."""
import tensorflow as tf


def window_offsets(radius):
    """(dy, dx) of the (2r+1)^2 square window in the originals' unfold order (ky-major, then kx)."""
    return [(ky - radius, kx - radius) for ky in range(2 * radius + 1) for kx in range(2 * radius + 1)]


def shifted_windows(x, radius):
    """Yields x shifted to every window offset: x[n, i+dy, j+dx, ...] with zeros out of bounds.

    Args:
      x: [N, H, W, C] tensor; radius: window radius r.
    Yields:
      [N, H, W, C] tensors, one per offset of `window_offsets(radius)`.
    """
    x = tf.convert_to_tensor(x)
    height, width = tf.shape(x)[1], tf.shape(x)[2]
    padded = tf.pad(x, [[0, 0], [radius, radius], [radius, radius], [0, 0]])
    for dy, dx in window_offsets(radius):
        yield padded[:, radius + dy:radius + dy + height, radius + dx:radius + dx + width, :]


def unfold(x, radius):
    """Zero-padded (2r+1)^2 neighbourhood of every pixel (torch `F.unfold(x, 2r+1, 1, r)` reshaped).

    Args:
      x: [N, H, W, C] tensor (any dtype).
      radius: window radius r.
    Returns:
      [N, H, W, C, 2r+1, 2r+1]: out[n, i, j, c, ky, kx] = x[n, i+ky-r, j+kx-r, c], 0 outside the image.
    """
    x = tf.convert_to_tensor(x)
    diameter = 2 * radius + 1
    # One op ('SAME' pads r zeros on each side for an odd window), patch layout (ky, kx, c).
    patches = tf.image.extract_patches(x, [1, diameter, diameter, 1], [1, 1, 1, 1], [1, 1, 1, 1], 'SAME')
    shape = tf.concat([tf.shape(x)[:3], [diameter, diameter, tf.shape(x)[3]]], axis=0)
    return tf.transpose(tf.reshape(patches, shape), [0, 1, 2, 5, 3, 4])
