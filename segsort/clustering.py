"""SegSort clustering utilities (vMF k-means and its helpers).

For now this module holds only the grid initialisation and location features that the SegSort data readers
(`common.data.aaf_reader`) need; the k-means functions are added by the SegSort issue.
"""
import numpy as np
import tensorflow as tf


def initialize_cluster_labels(num_clusters, img_dimensions):
    """Uniform grid of initial cluster ids over an image, numbered column-major.

    Args:
      num_clusters: [ky, kx] clusters along y and x (an int is used for both axes).
      img_dimensions: [H, W]; Python ints or scalar int tensors.

    Returns:
      int32 [H, W]: `y // ceil(H/ky) + (max_y_id + 1) * (x // ceil(W/kx))`. Shapes not divisible by the grid may
      use fewer than ky*kx ids (as the original).
    """
    height = tf.cast(img_dimensions[0], tf.int32)
    width = tf.cast(img_dimensions[1], tf.int32)
    clusters = tf.broadcast_to(tf.cast(num_clusters, tf.float32), [2])
    dims = tf.cast(tf.stack([height, width]), tf.float32)
    cell = tf.cast(tf.math.ceil(dims / clusters), tf.int32)
    y_ids = tf.reshape(tf.range(height) // cell[0], [-1, 1])
    x_ids = tf.reshape(tf.range(width) // cell[1], [1, -1])
    return y_ids + (tf.reduce_max(y_ids) + 1) * x_ids


def generate_location_features(img_dimensions, feature_type='int'):
    """Per-pixel (y, x) location features.

    Args:
      img_dimensions: [H, W]; Python ints or scalar int tensors.
      feature_type: 'int' -> int32 pixel indices; 'float' -> float32 (y / H, x / W).

    Returns:
      [H, W, 2] tensor, channel 0 = y, channel 1 = x.

    Raises:
      ValueError: feature_type is neither 'int' nor 'float'.
    """
    height = tf.cast(img_dimensions[0], tf.int32)
    width = tf.cast(img_dimensions[1], tf.int32)
    if feature_type == 'int':
        y_features = tf.range(height)
        x_features = tf.range(width)
    elif feature_type == 'float':
        y_features = tf.range(height, dtype=tf.float32) / tf.cast(height, tf.float32)
        x_features = tf.range(width, dtype=tf.float32) / tf.cast(width, tf.float32)
    else:
        raise ValueError(f"feature_type must be 'int' or 'float', got {feature_type!r}")
    x_grid, y_grid = tf.meshgrid(x_features, y_features)
    return tf.stack([y_grid, x_grid], axis=2)


def generate_location_features_np(img_dimensions):
    """NumPy location features spanning [0, 1] inclusive (y / (H-1), x / (W-1)).

    Args:
      img_dimensions: [H, W].

    Returns:
      float64 [1, H, W, 2] (y, x).
    """
    y_features = np.linspace(0, 1, img_dimensions[0])
    x_features = np.linspace(0, 1, img_dimensions[1])
    x_grid, y_grid = np.meshgrid(x_features, y_features)
    return np.stack([y_grid, x_grid], axis=2)[None]
