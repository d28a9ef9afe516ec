import numpy as np
import pytest

from affinitynet import random_walk as rw
from affinitynet.affinity import affinity_from_features

CASES = ['psa_random_walk_logt8', 'psa_random_walk_logt4']


def assert_labels_near_tie(label, expected, scores, atol):
    """Labels equal except at pixels whose top-2 gap in `scores` [H, W, C] is below atol."""
    top2 = np.sort(scores, axis=-1)[..., -2:]
    tie = (top2[..., 1] - top2[..., 0]) < atol
    assert np.all((label == expected) | tie), f'{np.sum((label != expected) & ~tie)} labels differ'


def _walk(ins, case, impl, aff=None):
    a = case['args']
    return rw.random_walk(ins['aff_dense'] if aff is None else aff, ins['cam_keys'], ins['cam_values'],
                          a['alpha'], a['beta'], a['logt'], impl=impl)


@pytest.mark.parametrize('name', CASES)
def test_dense_walk_golden(golden, name):
    ins, outs, case = golden(name, 'psa_a2gnn')
    tol = case['tolerance']
    result = _walk(ins, case, 'dense')
    for key in ('cam_pooled', 'aff_pow', 'trans_mat', 'cam_rw_lowres', 'cam_rw'):
        t = tol.get(key, tol['default'])
        np.testing.assert_allclose(result[key], outs[key], rtol=t['rtol'], atol=t['atol'], err_msg=key)
    h, w = outs['label'].shape
    assert_labels_near_tie(result['label'], outs['label'], outs['cam_rw'][0, :h, :w], tol['out_cam_rw']['atol'])


@pytest.mark.parametrize('name', CASES)
def test_sparse_walk_equals_dense_golden(golden, golden_dir, name):
    ins, outs, case = golden(name, 'psa_a2gnn')
    tol = case['tolerance']
    result = _walk(ins, case, 'sparse')
    # the walk itself within 1e-4 relative of the float64 reference
    ref = np.load(golden_dir / 'psa_a2gnn' / case['file'])['out64_cam_rw_lowres']
    np.testing.assert_allclose(result['cam_rw_lowres'], ref, rtol=1e-4, atol=tol['out_cam_rw_lowres']['atol'])
    h, w = outs['label'].shape
    assert_labels_near_tie(result['label'], outs['label'], outs['cam_rw'][0, :h, :w], tol['out_cam_rw']['atol'])


def test_sparse_from_pair_affinities_equals_dense_walk():
    """Synthetic case: stencil weights built from [D, P] pair affinities (no dense matrix) give the dense walk."""
    rng = np.random.default_rng(1)
    height, width = 83, 101  # feature grid 11 x 13
    features = np.repeat(np.repeat(rng.normal(size=[1, 3, 4, 16]), 4, 1), 4, 2)[:, :11, :13]
    features = (features + 0.05 * rng.normal(size=features.shape)).astype(np.float32)
    cam = rng.uniform(size=[height, width, 3]).astype(np.float32)
    keys = np.array([2, 7, 14])
    aff = affinity_from_features(features, 5)
    dense = rw.random_walk(affinity_from_features(features, 5, to_dense=True).numpy(), keys, cam, 16, 8, 6)
    sparse = rw.random_walk(aff.numpy(), keys, cam, 16, 8, 6, impl='sparse')
    np.testing.assert_allclose(sparse['cam_rw_lowres'], dense['cam_rw_lowres'], rtol=1e-4, atol=1e-6)
    assert_labels_near_tie(sparse['label'], dense['label'], dense['cam_rw'][0, :height, :width], 1e-5)
    weights = rw.stencil_weights_from_sparse(aff, (11, 13)).numpy()
    np.testing.assert_allclose(
        weights, rw.stencil_weights_from_dense(affinity_from_features(features, 5, to_dense=True), (11, 13)))


def test_wrong_affinity_size_is_an_error():
    with pytest.raises(ValueError, match='dense affinity must be'):
        rw.random_walk(np.eye(10, dtype=np.float32), [0], np.zeros([16, 16, 1], np.float32), 16, 8, 2)
    with pytest.raises(ValueError, match='rw_impl'):
        rw.random_walk(np.eye(4, dtype=np.float32), [0], np.zeros([16, 16, 1], np.float32), 16, 8, 2, impl='x')


def test_grid_without_pairs_walks_nowhere():
    cam = np.random.default_rng(0).uniform(size=[40, 64, 1]).astype(np.float32)  # 5 x 8 grid: no pair at r=5
    aff = affinity_from_features(np.zeros([1, 5, 8, 3], np.float32), 5)
    dense = rw.random_walk(np.eye(40, dtype=np.float32), [4], cam, 16, 8, 3)
    sparse = rw.random_walk(aff, [4], cam, 16, 8, 3, impl='sparse')
    np.testing.assert_allclose(sparse['cam_rw_lowres'][0], dense['cam_pooled'], rtol=1e-6)
    np.testing.assert_array_equal(sparse['label'], dense['label'])


def test_all_zero_cams_walk_background_only():
    """An image whose CAMs are all zero walks the background channel alone (once a while_loop shape error)."""
    rng = np.random.default_rng(2)
    features = rng.normal(size=[1, 6, 7, 8]).astype(np.float32)
    cam = np.zeros([48, 56, 2], np.float32)
    dense = rw.random_walk(affinity_from_features(features, 5, to_dense=True).numpy(), [3, 9], cam, 16, 8, 4)
    sparse = rw.random_walk(affinity_from_features(features, 5).numpy(), [3, 9], cam, 16, 8, 4, impl='sparse')
    np.testing.assert_allclose(sparse['cam_rw_lowres'], dense['cam_rw_lowres'], rtol=1e-4, atol=1e-6)
    assert np.all(sparse['label'] == 0)
