"""Reference (literal) affinity-field neighbour ops, channels-last.

Ports of AAF's `network/aaf/layers.py` with the original names, argument order and neighbour order. These ops
materialise one slice per neighbour and are meant for parity checks and for the reference losses in
`aaf.losses`; training uses the stencil formulation in `common.ops.affinity_fused`.

Neighbour order of every `[..., 8]` output (offset (dy, dx) from the centre, distance `size`):
(-s,-s), (-s,0), (-s,+s), (0,-s), (0,+s), (+s,-s), (+s,0), (+s,+s).
"""
import tensorflow as tf

# (dy, dx) in units of `size`, in the originals' channel order (row-major over the (2s+1)^2 patch corners).
EIGHTCORNER_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def _static_rank(x, rank, what):
    if x.shape.rank != rank:
        raise ValueError(f'{what} must be a {rank}-D tensor, got shape {x.shape}')


def _corner_slices(x_pad, size, height, width):
    """The 8 corner views of a tensor padded by `size` on both spatial sides, in the eight-corner order."""
    views = []
    for dy, dx in EIGHTCORNER_OFFSETS:
        start_y, start_x = (dy + 1) * size, (dx + 1) * size
        views.append(x_pad[:, start_y:start_y + height, start_x:start_x + width])
    return views


def eightway_activation(x):
    """3x3 neighbours with symmetric (mirror) padding (unused by the originals' training scripts).

    Args:
      x: [N, H, W, C] tensor.
    Returns:
      [N, H, W, C, 8] in the order left, right, up, down, left-up, left-down, right-up, right-down.
    """
    x = tf.convert_to_tensor(x)
    _static_rank(x, 4, 'eightway_activation input x')
    x_pad = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode='SYMMETRIC')
    groups = [
        x_pad[:, 1:-1, :-2], x_pad[:, 1:-1, 2:], x_pad[:, :-2, 1:-1], x_pad[:, 2:, 1:-1],
        x_pad[:, :-2, :-2], x_pad[:, 2:, :-2], x_pad[:, :-2, 2:], x_pad[:, 2:, 2:],
    ]
    return tf.stack(groups, axis=-1)


def eightcorner_activation(x, size):
    """Values at the eight corners of the (2*size+1)^2 patch around every pixel; zero outside the image.

    Args:
      x: [N, H, W, C] tensor.
      size: half patch size (neighbour distance), int >= 1.
    Returns:
      [N, H, W, C, 8]; channel k holds x at (y + dy_k*size, x + dx_k*size), see the module docstring.
    """
    x = tf.convert_to_tensor(x)
    _static_rank(x, 4, 'eightcorner_activation input x')
    height, width = tf.shape(x)[1], tf.shape(x)[2]
    x_pad = tf.pad(x, [[0, 0], [size, size], [size, size], [0, 0]], constant_values=0)
    return tf.stack(_corner_slices(x_pad, size, height, width), axis=-1)


def ignores_from_label(labels, num_classes, size):
    """Pairs to ignore: bidirectional, borders count as ignored (AAF quirk Q-A4).

    Channel k of pixel p is True when p, p + d_k or the opposite pixel p - d_k has a label > num_classes-1
    or lies outside the image.

    Args:
      labels: [N, H, W] integer labels.
      num_classes: number of valid classes; larger values (e.g. 255) are ignored.
      size: neighbour distance.
    Returns:
      bool [N, H, W, 8] in the eight-corner order.
    """
    labels = tf.convert_to_tensor(labels)
    _static_rank(labels, 3, 'ignores_from_label labels')
    height, width = tf.shape(labels)[1], tf.shape(labels)[2]
    ignore = tf.greater(labels, tf.cast(num_classes - 1, labels.dtype))
    ignore_pad = tf.pad(ignore, [[0, 0], [size, size], [size, size]], constant_values=True)
    neighbours = _corner_slices(ignore_pad, size, height, width)
    # Channel k pairs with the opposite corner 7-k (the order is symmetric under negation).
    groups = [ignore | neighbours[k] | neighbours[7 - k] for k in range(8)]
    return tf.stack(groups, axis=-1)


def edges_from_label(one_hot, size, ignore_class=255):
    """Per-class-channel edges: the neighbour's one-hot entry differs from the centre's.

    The original's argument is named `labels` but receives one-hot labels; padding uses `ignore_class`, so
    out-of-image neighbours are edges in every channel (they are removed by `ignores_from_label`).

    Args:
      one_hot: [N, H, W, C] float one-hot labels (ignored pixels are all-zero rows).
      size: neighbour distance.
      ignore_class: padding value.
    Returns:
      bool [N, H, W, C, 8] in the eight-corner order.
    """
    one_hot = tf.convert_to_tensor(one_hot)
    _static_rank(one_hot, 4, 'edges_from_label one_hot')
    height, width = tf.shape(one_hot)[1], tf.shape(one_hot)[2]
    pad = tf.pad(one_hot, [[0, 0], [size, size], [size, size], [0, 0]],
                 constant_values=tf.cast(ignore_class, one_hot.dtype))
    groups = [tf.not_equal(neighbour, one_hot) for neighbour in _corner_slices(pad, size, height, width)]
    return tf.stack(groups, axis=-1)
