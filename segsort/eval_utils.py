"""SegSort evaluation: training prototypes of an image and k-nearest-neighbour labelling of test clusters.

Names, argument order and outputs follow `network/segsort/eval_utils.py` of the original.
"""
import tensorflow as tf

from segsort import clustering


def find_majority_label_index(labels, cluster_labels):
    """Majority label of every cluster and the pixels that carry it.

    Args:
      labels: int [P] semantic (or panoptic) labels.
      cluster_labels: int [P] cluster ids.
    Returns:
      (select_pixels int64 [M, 1]: indices of pixels whose label is their cluster's majority, in pixel order;
       majority_labels int32 [max(cluster)+1]: ties -> lowest label, unused cluster ids -> 0).
    """
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    cluster_labels = tf.cast(tf.reshape(cluster_labels, [-1]), tf.int32)
    num_labels = tf.reduce_max(labels) + 1
    num_clusters = tf.reduce_max(cluster_labels) + 1
    # Joint histogram as one bincount instead of a one-hot matmul.
    counts = tf.math.bincount(cluster_labels * num_labels + labels, minlength=num_clusters * num_labels,
                              maxlength=num_clusters * num_labels)
    counts = tf.reshape(counts, [num_clusters, num_labels])
    majority_labels = tf.argmax(counts, axis=1, output_type=tf.int32)
    select_pixels = tf.where(tf.equal(tf.gather(majority_labels, cluster_labels), labels))
    return select_pixels, majority_labels


def extract_trained_prototypes(embedding, location_features, cluster_labels, num_clusters, kmeans_iterations,
                               panoptic_labels, panoptic_label_divisor, ignore_label, evaluate_semantic_or_panoptic):
    """Prototypes of one training image: k-means with location features, each cluster's majority label.

    Args:
      embedding: float [P, D] unit rows.
      location_features: float [P, 2].
      cluster_labels: int [P] initial clusters (the 5x5 grid).
      num_clusters: clusters of the k-means (25).
      kmeans_iterations: M/E iterations.
      panoptic_labels: int [P]; pixels with `label // divisor == ignore_label` are dropped.
      panoptic_label_divisor: 1 for semantic labels.
      ignore_label: 255.
      evaluate_semantic_or_panoptic: 'semantic' or 'panoptic'.
    Returns:
      (prototype_features float [K, D], prototype_semantic_labels int32 [K], prototype_instance_labels int32 [K]).
    """
    panoptic_labels = tf.cast(tf.reshape(panoptic_labels, [-1]), tf.int32)
    valid = tf.where(tf.not_equal(panoptic_labels // panoptic_label_divisor, ignore_label))[:, 0]
    panoptic_labels = tf.gather(panoptic_labels, valid)
    cluster_labels = tf.gather(tf.reshape(cluster_labels, [-1]), valid)
    embedding = tf.gather(embedding, valid)
    location_features = tf.gather(location_features, valid)

    with_location = clustering.normalize_embedding(tf.concat([embedding, location_features], 1))
    cluster_labels = clustering.kmeans_with_initial_labels(with_location, cluster_labels, num_clusters,
                                                           kmeans_iterations)
    _, cluster_labels = tf.unique(cluster_labels)

    if evaluate_semantic_or_panoptic == 'panoptic':
        label_mapping, unique_panoptic_labels = tf.unique(panoptic_labels)
        select_pixels, majority_labels = find_majority_label_index(unique_panoptic_labels, cluster_labels)
        prototype_semantic_labels = tf.gather(label_mapping, majority_labels) // panoptic_label_divisor
        prototype_instance_labels = majority_labels
    else:
        select_pixels, majority_labels = find_majority_label_index(panoptic_labels // panoptic_label_divisor,
                                                                   cluster_labels)
        prototype_semantic_labels = majority_labels
        prototype_instance_labels = tf.zeros_like(majority_labels)

    cluster_labels = tf.gather(cluster_labels, select_pixels[:, 0])
    embedding = tf.gather(embedding, select_pixels[:, 0])
    prototype_features = clustering.calculate_prototypes_from_labels(embedding, cluster_labels)
    return prototype_features, prototype_semantic_labels, prototype_instance_labels


def k_nearest_neighbors(k_predictions, prototype_labels):
    """Majority vote of the labels of the k nearest prototypes.

    Args:
      k_predictions: int [P, k] prototype indices.
      prototype_labels: int [N].
    Returns:
      int32 [P] (ties -> lowest label).
    """
    neighbour_labels = tf.gather(tf.cast(prototype_labels, tf.int32), k_predictions)
    votes = tf.reduce_sum(tf.one_hot(neighbour_labels, tf.reduce_max(neighbour_labels) + 1), axis=1)
    return tf.argmax(votes, axis=1, output_type=tf.int32)


def predict_semantic_instance_labels(cluster_labels, test_prototypes, prototype_features, prototype_semantic_labels,
                                     prototype_instance_labels, k=1):
    """Labels every pixel by the kNN vote of its cluster's prototype among the training prototypes.

    Args:
      cluster_labels: int [B, H, W] ids into `test_prototypes`.
      test_prototypes: float [K, D].
      prototype_features: float [N, D] training prototypes.
      prototype_semantic_labels: int [N].
      prototype_instance_labels: int [N] or None.
      k: neighbours.
    Returns:
      (semantic_predictions int32 [B, H, W], instance_predictions int32 [B, H, W] or None; instance labels
      relabelled in first-occurrence order over the test prototypes).

    Raises:
      ValueError: the embedding dimensions of test and training prototypes differ, or k exceeds the number of
        training prototypes.
    """
    test_prototypes = tf.convert_to_tensor(test_prototypes)
    prototype_features = tf.convert_to_tensor(prototype_features, test_prototypes.dtype)
    if test_prototypes.shape[-1] is not None and prototype_features.shape[-1] is not None and \
            test_prototypes.shape[-1] != prototype_features.shape[-1]:
        raise ValueError(f'embedding dimension {test_prototypes.shape[-1]} does not match the '
                         f'{prototype_features.shape[-1]}-dimensional training prototypes')
    if prototype_features.shape[0] is not None and k > prototype_features.shape[0]:
        raise ValueError(f'k={k} nearest neighbours requested but only {prototype_features.shape[0]} training '
                         f'prototypes exist')
    similarities = tf.matmul(test_prototypes, prototype_features, transpose_b=True)
    # NaN rows (ids of empty test clusters, which no pixel uses) must not disturb top_k.
    similarities = tf.where(tf.math.is_nan(similarities), tf.zeros_like(similarities), similarities)
    _, k_predictions = tf.nn.top_k(similarities, k=k, sorted=False)
    semantic_predictions = tf.gather(k_nearest_neighbors(k_predictions, prototype_semantic_labels), cluster_labels)
    if prototype_instance_labels is None:
        return semantic_predictions, None
    instance = k_nearest_neighbors(k_predictions, prototype_instance_labels)
    _, instance = tf.unique(instance)
    return semantic_predictions, tf.gather(instance, cluster_labels)
