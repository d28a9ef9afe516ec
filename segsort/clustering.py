"""SegSort clustering: unit-sphere embeddings, mean-direction prototypes and von Mises-Fisher (cosine) k-means.

Functions with an original in `network/segsort/common_utils.py` keep its name, argument order and outputs
(NaN included: a zero vector normalised, or the prototype of a label that does not occur, quirk Q-S5).
Differences, all without effect on the original's valid results:
  * the k-means E-step gives an empty cluster (NaN prototype) similarity -inf, so it never wins (the original
    relied on TF CPU argmax skipping NaN);
  * `batch_kmeans_with_initial_labels` clusters all images of a batch in one set of ops (segment ids offset per
    image) instead of one graph per image; `kmeans` clusters every image of a batch on its own grid (the original
    was only valid for batch 1, Q-S9).
"""
import numpy as np
import tensorflow as tf


def normalize_embedding(embedding):
    """Unit-length features along the last axis, without epsilon (a zero vector gives NaN, as the original).

    Args:
      embedding: float [..., D].
    Returns:
      float [..., D].
    """
    return _normalize(tf.convert_to_tensor(embedding))


@tf.custom_gradient
def _normalize(embedding):
    norm = tf.norm(embedding, axis=-1, keepdims=True)
    unit = embedding / norm

    def grad(upstream):
        # d(x/|x|) = (g - y (g . y)) / |x|: three passes over [..., D] instead of autodiff's division/norm chain.
        return (upstream - unit * tf.reduce_sum(upstream * unit, axis=-1, keepdims=True)) / norm

    return unit, grad


def calculate_prototypes_from_labels(embedding, labels, max_label=None):
    """Mean-direction prototypes: the normalised sum of the embeddings of each label (the k-means M-step).

    Args:
      embedding: float [..., D]; flattened to [P, D].
      labels: int [...] with P entries, values in [0, max_label).
      max_label: number of prototypes K; default max(labels) + 1.
    Returns:
      float [K, D]; rows of labels that do not occur are NaN (0/0, as the original).
    """
    embedding = tf.convert_to_tensor(embedding)
    embedding = tf.reshape(embedding, [-1, tf.shape(embedding)[-1]])
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    if max_label is None:
        max_label = tf.reduce_max(labels) + 1
    sums = tf.math.unsorted_segment_sum(embedding, labels, tf.cast(max_label, tf.int32))
    return normalize_embedding(sums)


def _mask_nan(similarities):
    return tf.where(tf.math.is_nan(similarities), tf.constant(-np.inf, similarities.dtype), similarities)


def find_nearest_prototypes(embedding, prototypes):
    """Index of the most similar prototype (largest dot product) of every embedding row (the k-means E-step).

    NaN prototypes (empty clusters) never win.

    Args:
      embedding: float [..., D] (flattened to [P, D]).
      prototypes: float [K, D].
    Returns:
      int64 [P].
    """
    prototypes = tf.convert_to_tensor(prototypes)
    embedding = tf.reshape(embedding, [-1, tf.shape(prototypes)[-1]])
    similarities = tf.matmul(embedding, prototypes, transpose_b=True)
    return tf.argmax(_mask_nan(similarities), axis=1)


def batch_kmeans_with_initial_labels(embedding, initial_labels, max_label, iterations=10, valid=None,
                                     jit_compile=False):
    """vMF k-means of several images at once, each image with its own clusters.

    Equivalent to `kmeans_with_initial_labels` run on every image separately (on its valid pixels), but built as
    `iterations` batched M/E steps: prototypes are per-image segment sums ([B, K, D]) and each pixel is compared
    only with the prototypes of its own image.

    Args:
      embedding: float [B, P, D] (unit rows).
      initial_labels: int [B, P], values in [0, max_label).
      max_label: clusters per image K (Python int or scalar tensor).
      iterations: M/E iterations.
      valid: optional bool [B, P]; invalid pixels neither contribute to prototypes nor get a meaningful label.
      jit_compile: compile the M/E loop with XLA (needs a Python int `max_label`; XLA compiles once per input
        shape, so use it where shapes are fixed, as in the training loss, not for images of varying sizes).
    Returns:
      int64 [B, P] labels after the last E-step (invalid pixels: their initial label).
    """
    embedding = tf.convert_to_tensor(embedding)
    labels = tf.cast(initial_labels, tf.int64)
    if valid is None:
        valid = tf.ones(tf.shape(labels), tf.bool)
    if jit_compile and isinstance(max_label, int):
        labels = _compiled_kmeans_steps(embedding, labels, valid, max_label, iterations)
    else:
        labels = _kmeans_steps(embedding, labels, valid, tf.cast(max_label, tf.int32), iterations)
    return tf.where(valid, labels, tf.cast(initial_labels, tf.int64))


def _kmeans_steps(embedding, labels, valid, max_label, iterations, compiled=False):
    """The M/E iterations of `batch_kmeans_with_initial_labels` (labels of invalid pixels are meaningless).

    `compiled`: the body is traced for XLA and `max_label` is a Python int (the E-step's arg-max is unrolled over
    the clusters, which XLA fuses into one vectorised loop; its own arg-max reduction is several times slower).
    """
    # Zero rows add exactly nothing to the prototype sums: mask once, not every M-step.
    embedding = tf.where(valid[..., tf.newaxis], embedding, tf.zeros([], embedding.dtype))
    zero, minus_inf = tf.zeros([], embedding.dtype), tf.constant(-np.inf, embedding.dtype)
    batch_size = tf.shape(embedding)[0]
    flat_embedding = tf.reshape(embedding, [-1, tf.shape(embedding)[-1]])
    offsets = tf.range(tf.cast(batch_size, tf.int64))[:, tf.newaxis] * tf.cast(max_label, tf.int64)

    def step(labels):
        # M-step: per-image cluster sums as one segment sum over image-offset ids (no [B, K, P] one-hot).
        sums = tf.math.unsorted_segment_sum(flat_embedding, tf.reshape(labels + offsets, [-1]),
                                            batch_size * max_label)
        sums = tf.reshape(sums, [batch_size, max_label, -1])  # [B, K, D]
        norms = tf.norm(sums, axis=-1, keepdims=True)
        # An empty cluster (0/0 = NaN prototype in the original) must never win: a zero prototype plus a -inf bias.
        prototypes = tf.where(norms > 0, sums / norms, zero)
        bias = tf.where(norms > 0, zero, minus_inf)  # [B, K, 1]
        # Clusters-major layout [B, K, P]: the arg-max runs over a non-inner axis, which TF vectorises along the
        # pixels (an arg-max over a short inner axis of 25 is several times slower).
        similarities = tf.matmul(prototypes, embedding, transpose_b=True) + bias  # [B, K, P]
        return _first_arg_max_over_clusters(similarities, max_label) if compiled else tf.argmax(similarities, 1)

    if compiled:
        # One loop body for XLA: compiling 10 unrolled copies took seconds per crop size.
        def body(i, labels):
            return i + 1, tf.reshape(step(labels), tf.shape(labels))  # keeps the static shape for the loop

        return tf.while_loop(lambda i, _: i < iterations, body, (tf.constant(0), labels))[1]
    for _ in range(iterations):
        labels = step(labels)
    return labels


def _first_arg_max_over_clusters(similarities, num_clusters):
    """tf.argmax(similarities, axis=1) (first maximum on ties) as a running maximum over the K rows [B, P]."""
    best, best_index = similarities[:, 0], tf.zeros(tf.shape(similarities[:, 0]), tf.int64)
    for k in range(1, num_clusters):
        better = similarities[:, k] > best
        best = tf.where(better, similarities[:, k], best)
        best_index = tf.where(better, tf.constant(k, tf.int64), best_index)
    return best_index


@tf.function(jit_compile=True, reduce_retracing=True)
def _compiled_kmeans_steps(embedding, labels, valid, max_label, iterations):
    return _kmeans_steps(embedding, labels, valid, max_label, iterations, compiled=True)


def kmeans_with_initial_labels(embedding, initial_labels, max_label=None, iterations=10):
    """vMF k-means from given initial labels; `max_label` (default max(initial)+1) clusters stay fixed.

    Args:
      embedding: float [P, D] unit rows.
      initial_labels: int [P].
      max_label: number of clusters K.
      iterations: M/E iterations.
    Returns:
      int64 [P] labels after the last E-step (empty clusters stay empty).
    """
    initial_labels = tf.reshape(initial_labels, [-1])
    if max_label is None:
        max_label = tf.reduce_max(initial_labels) + 1
    if iterations == 0:
        return tf.cast(initial_labels, tf.int64)
    labels = batch_kmeans_with_initial_labels(tf.convert_to_tensor(embedding)[tf.newaxis],
                                              initial_labels[tf.newaxis], max_label, iterations)
    return labels[0]


def kmeans(embedding, num_clusters, iterations=10):
    """Grid-initialised vMF k-means of every image of a batch (each image on its own `num_clusters` grid).

    Args:
      embedding: float [B, H, W, D] unit vectors.
      num_clusters: [ky, kx] (or an int for both axes).
      iterations: M/E iterations.
    Returns:
      int64 [B, H, W]; cluster ids in [0, max(grid)+1).
    """
    embedding = tf.convert_to_tensor(embedding)
    shape = tf.shape(embedding)
    grid = tf.reshape(initialize_cluster_labels(num_clusters, [shape[1], shape[2]]), [1, -1])
    flat = tf.reshape(embedding, [shape[0], -1, shape[3]])
    labels = tf.tile(grid, [shape[0], 1])
    labels = batch_kmeans_with_initial_labels(flat, labels, tf.reduce_max(grid) + 1, iterations)
    return tf.reshape(labels, shape[:3])


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


def prepare_prototype_labels(semantic_labels, instance_labels, offset=256):
    """Segment ids of (instance, semantic) pairs and each segment's semantic label.

    Args:
      semantic_labels: int [P] (flattened), values in [0, offset).
      instance_labels: int [P] (instance or cluster ids).
      offset: label divisor of the key `semantic + instance * offset`.
    Returns:
      (unique_instance_labels int32 [P] segment ids in first-occurrence order,
       prototype_labels int32 [S] semantic label of every segment).
    """
    keys = (tf.reshape(tf.cast(semantic_labels, tf.int64), [-1])
            + tf.reshape(tf.cast(instance_labels, tf.int64), [-1]) * offset)
    unique_keys, unique_instance_labels = tf.unique(keys)
    return tf.cast(unique_instance_labels, tf.int32), tf.cast(unique_keys % offset, tf.int32)
