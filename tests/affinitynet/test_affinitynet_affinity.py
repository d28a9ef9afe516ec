import numpy as np
import pytest

from affinitynet import pairs
from affinitynet.affinity import affinity_from_features


def test_affinity_from_features_golden(golden):
    ins, outs, case = golden('psa_aff_from_f9_12x15', 'psa_a2gnn')
    radius = case['args']['radius']
    np.testing.assert_allclose(affinity_from_features(ins['f9'], radius).numpy(), outs['aff'],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(affinity_from_features(ins['f9'], radius, to_dense=True).numpy(),
                               outs['aff_dense'], rtol=1e-5, atol=1e-6)


def test_affinity_matches_gather_reference():
    rng = np.random.default_rng(0)
    features = rng.normal(size=[2, 9, 13, 5]).astype(np.float32)
    ind_from, ind_to = pairs.get_indices_of_pairs(4, (9, 13))
    flat = features.reshape(2, -1, 5)
    expected = np.exp(-np.abs(flat[:, ind_to].reshape(2, -1, len(ind_from), 5)
                              - flat[:, ind_from][:, None]).mean(-1))
    np.testing.assert_allclose(affinity_from_features(features, 4).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_feature_map_without_pairs_gives_identity():
    # the original's empty index lists: no affinities, the dense matrix is the identity
    assert affinity_from_features(np.zeros([2, 3, 4, 2], np.float32), 5).shape == (2, 34, 0)
    np.testing.assert_array_equal(affinity_from_features(np.zeros([1, 3, 4, 2], np.float32), 5, True), np.eye(12))
