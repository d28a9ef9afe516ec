"""Embedding visualisation: principal components (the original's `vis_utils.calculate_principal_components`,
`pca`), used for the embedding-as-RGB images."""
import tensorflow as tf


def calculate_principal_components(embedding, num_components=3):
    """Principal directions of embedding rows.

    Args:
      embedding: float [..., D] (flattened to [P, D]).
      num_components: number of directions.
    Returns:
      float [D, num_components]: the leading eigenvectors of the centred scatter matrix (sign arbitrary).
    """
    embedding = tf.convert_to_tensor(embedding, tf.float32)
    embedding = tf.reshape(embedding, [-1, tf.shape(embedding)[-1]])
    centred = embedding - tf.reduce_mean(embedding, axis=0, keepdims=True)
    sigma = tf.matmul(centred, centred, transpose_a=True)
    _, u, _ = tf.linalg.svd(sigma)
    return u[:, :num_components]


def pca(embedding, num_components=3, principal_components=None):
    """Projects embedding rows on their principal directions.

    Args:
      embedding: float [..., D].
      num_components: directions kept.
      principal_components: optional [D, k] from `calculate_principal_components` (default: of this embedding).
    Returns:
      numpy float32 [..., num_components] of the centred embedding's coordinates.
    """
    embedding = tf.convert_to_tensor(embedding, tf.float32)
    if principal_components is None:
        principal_components = calculate_principal_components(embedding, num_components)
    flat = tf.reshape(embedding, [-1, tf.shape(embedding)[-1]])
    flat = flat - tf.reduce_mean(flat, axis=0, keepdims=True)
    out = tf.matmul(flat, principal_components)
    return tf.reshape(out, tf.concat([tf.shape(embedding)[:-1], [num_components]], 0)).numpy()
