"""Golden parity of the SegSort grid initialisation and location features."""
import numpy as np

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
