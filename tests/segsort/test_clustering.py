"""Golden parity of the SegSort grid initialisation and location features."""
import numpy as np
import pytest

from segsort.clustering import generate_location_features, generate_location_features_np, initialize_cluster_labels


def test_initialize_cluster_labels_golden(golden, assert_golden):
    _, outs, case = golden('segsort_initialize_cluster_labels')
    for i, sub in enumerate(case['scalars']['subcases']):
        labels = initialize_cluster_labels(sub['num_clusters'], sub['img_dimensions'])
        assert labels.dtype.name == 'int32'
        assert_golden(labels.numpy(), outs[f'labels_{i}'], case['tolerance'][f'out_labels_{i}'])


def test_initialize_cluster_labels_int_broadcast_and_tensor_dims():
    import tensorflow as tf
    by_int = initialize_cluster_labels(5, [13, 17]).numpy()
    by_list = initialize_cluster_labels([5, 5], [tf.constant(13), tf.constant(17)]).numpy()
    np.testing.assert_array_equal(by_int, by_list)
    # Independent reference: cell size ceil(13/5)=3 rows, ceil(17/5)=4 cols; 5 row ids.
    ref = (np.arange(13)[:, None] // 3) + 5 * (np.arange(17)[None, :] // 4)
    np.testing.assert_array_equal(by_int, ref)


def test_generate_location_features_golden(golden, assert_golden):
    _, outs, case = golden('segsort_generate_location_features')
    for i, sub in enumerate(case['scalars']['subcases']):
        feats = generate_location_features(sub['img_dimensions'], sub['feature_type'])
        assert feats.dtype.name == ('int32' if sub['feature_type'] == 'int' else 'float32')
        assert_golden(feats.numpy(), outs[f'features_{i}'], case['tolerance'][f'out_features_{i}'])
    for j, dims in enumerate(case['scalars']['np_subcases']):
        feats = generate_location_features_np(dims)
        assert feats.dtype == np.float64
        assert_golden(feats, outs[f'features_np_{j}'], case['tolerance'][f'out_features_np_{j}'])


def test_generate_location_features_rejects_unknown_type():
    import pytest
    with pytest.raises(ValueError, match='feature_type'):
        generate_location_features([3, 4], 'double')


# ---------------------------------------------------------------------------------------------- k-means family
import tensorflow as tf  # noqa: E402

from segsort import clustering  # noqa: E402


def test_normalize_embedding_golden_and_zero_vector(golden, assert_golden):
    ins, outs, case = golden('segsort_normalize_embedding')
    assert_golden(clustering.normalize_embedding(ins['embedding']).numpy(), outs['y'], case['tolerance']['out_y'])
    assert np.isnan(clustering.normalize_embedding(np.zeros([1, 3], np.float32)).numpy()).all()


def test_calculate_prototypes_from_labels_golden_and_empty_label(golden, assert_golden):
    ins, outs, case = golden('segsort_calculate_prototypes_from_labels')
    protos = clustering.calculate_prototypes_from_labels(ins['embedding'], ins['labels'])
    assert_golden(protos.numpy(), outs['prototypes'], case['tolerance']['out_prototypes'])
    # A label that does not occur gives a NaN row (Q-S5), the others are unit vectors.
    protos = clustering.calculate_prototypes_from_labels(np.eye(3, dtype=np.float32), [0, 0, 2], 4).numpy()
    assert np.isnan(protos[1]).all() and np.isnan(protos[3]).all()
    np.testing.assert_allclose(protos[0], [2 ** -0.5, 2 ** -0.5, 0], rtol=1e-6)


def test_find_nearest_prototypes_golden_and_nan_never_wins(golden, assert_golden):
    ins, outs, case = golden('segsort_find_nearest_prototypes')
    labels = clustering.find_nearest_prototypes(ins['embedding'], ins['prototypes'])
    assert labels.dtype == tf.int64
    assert_golden(labels.numpy(), outs['labels'], case['tolerance']['out_labels'])
    protos = np.array([[np.nan, np.nan], [0.0, 1.0], [1.0, 0.0]], np.float32)
    np.testing.assert_array_equal(clustering.find_nearest_prototypes([[1.0, 0.1], [-1.0, 0.2]], protos), [2, 1])


def test_kmeans_with_initial_labels_golden(golden, assert_golden):
    ins, outs, case = golden('segsort_kmeans_with_initial_labels')
    labels = clustering.kmeans_with_initial_labels(ins['embedding'], ins['initial_labels'],
                                                   case['scalars']['max_label'], case['scalars']['iterations'])
    assert_golden(labels.numpy(), outs['labels'], case['tolerance']['out_labels'])


def test_kmeans_golden(golden, assert_golden):
    ins, outs, case = golden('segsort_kmeans')
    labels = clustering.kmeans(ins['embedding'], case['scalars']['num_clusters'], case['scalars']['iterations'])
    assert_golden(labels.numpy(), outs['labels'], case['tolerance']['out_labels'])


@pytest.mark.parametrize('jit_compile', [False, True])
def test_batched_kmeans_equals_per_image_runs_with_empty_clusters(jit_compile):
    rng = np.random.default_rng(3)
    emb = rng.normal(size=[3, 40, 6]).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
    init = rng.integers(0, 4, size=[3, 40]).astype(np.int32)  # max_label 7: ids 4..6 always empty
    valid = rng.random([3, 40]) > 0.3
    batched = clustering.batch_kmeans_with_initial_labels(emb, init, 7, 5, valid, jit_compile=jit_compile).numpy()
    np.testing.assert_array_equal(batched[~valid], init[~valid])
    for b in range(3):
        single = clustering.kmeans_with_initial_labels(emb[b][valid[b]], init[b][valid[b]], 7, 5).numpy()
        np.testing.assert_array_equal(batched[b][valid[b]], single)
        assert single.max() < 4
    # The same batch through `kmeans` clusters every image on its own grid (the original only handled batch 1).
    grid_emb = emb[:, :36].reshape(3, 6, 6, 6)
    per_image = [clustering.kmeans(grid_emb[b:b + 1], [2, 2], 4).numpy()[0] for b in range(3)]
    np.testing.assert_array_equal(clustering.kmeans(grid_emb, [2, 2], 4).numpy(), np.stack(per_image))


def test_prepare_prototype_labels_golden(golden, assert_golden):
    ins, outs, case = golden('segsort_prepare_prototype_labels')
    idx, proto = clustering.prepare_prototype_labels(ins['semantic_labels'], ins['instance_labels'],
                                                     case['scalars']['offset'])
    assert_golden(idx.numpy(), outs['unique_instance_labels'], case['tolerance']['out_unique_instance_labels'])
    assert_golden(proto.numpy(), outs['prototype_labels'], case['tolerance']['out_prototype_labels'])


def test_compiled_kmeans_breaks_ties_like_argmax():
    # Duplicate prototypes tie exactly: the unrolled arg-max of the XLA path must keep the first, as tf.argmax.
    emb = np.tile(np.eye(3, dtype=np.float32)[None], [2, 4, 1])  # [2, 12, 3], four copies of each axis
    init = np.tile(np.array([0, 1, 2, 3, 4, 5] * 2, np.int32)[None], [2, 1])  # clusters 0/3, 1/4, 2/5 coincide
    eager = clustering.batch_kmeans_with_initial_labels(emb, init, 6, 3).numpy()
    compiled = clustering.batch_kmeans_with_initial_labels(emb, init, 6, 3, jit_compile=True).numpy()
    np.testing.assert_array_equal(compiled, eager)
    assert set(eager.ravel()) == {0, 1, 2}
