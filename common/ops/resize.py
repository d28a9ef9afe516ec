"""TF1 "legacy" resizing, as every TF1 original used it (Q-A13).

Both ops are corner-anchored: the source coordinate of output pixel i is i * in / out (align_corners=False,
half_pixel_centers=False), clamped to the last pixel. TF2's `tf.image.resize` samples pixel centres instead and
gives different numbers. The raw ops are the kernels behind the deprecated `tf.compat.v1.image.*` wrappers, without
their deprecation warnings.
"""
import tensorflow as tf


def resize_bilinear_legacy(images, size):
    """`tf.compat.v1.image.resize_bilinear(images, size)`: images [N, H, W, C] -> float32 [N, out_h, out_w, C]."""
    return tf.raw_ops.ResizeBilinear(images=images, size=tf.cast(tf.convert_to_tensor(size), tf.int32),
                                     align_corners=False, half_pixel_centers=False)


def resize_nearest_legacy(images, size):
    """`tf.compat.v1.image.resize_nearest_neighbor(images, size)`: src = floor(dst * in / out); keeps the dtype."""
    return tf.raw_ops.ResizeNearestNeighbor(images=images, size=tf.cast(tf.convert_to_tensor(size), tf.int32),
                                            align_corners=False, half_pixel_centers=False)
