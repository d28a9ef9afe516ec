"""A2GNN's gated affinity head (`network/resnet38_aff_gated.py`): the per-pixel affinity to every neighbour of a
square window, from the mean absolute difference of the f9 features."""
import tensorflow as tf

from a2gnn.ops import shifted_windows


def gated_affinity(f9, radius):
    """Affinities of the gated head for one radius.

    Args:
      f9: [N, H, W, C] float features (ELU output of the f9 conv).
      radius: window radius r (square (2r+1)^2 window, centre included).
    Returns:
      (aff, aff_crf), each [N, H, W, 2r+1, 2r+1]: aff_crf[n,i,j,ky,kx] = mean_c |f[i+ky-r, j+kx-r, c] - f[i,j,c]|
      with zero features out of bounds (the original's zero-padded unfold), aff = exp(-aff_crf).
    """
    f9 = tf.convert_to_tensor(f9, tf.float32)
    diameter = 2 * radius + 1
    # One offset at a time: the unfolded [N, H, W, C, d, d] tensor would be d^2 times the feature map.
    distances = [tf.reduce_mean(tf.abs(neighbour - f9), axis=-1) for neighbour in shifted_windows(f9, radius)]
    aff_crf = tf.stack(distances, axis=-1)
    aff_crf = tf.reshape(aff_crf, tf.concat([tf.shape(aff_crf)[:3], [diameter, diameter]], axis=0))
    return tf.exp(-aff_crf), aff_crf
