"""Reference affinity ops (common.ops.affinity) against the original's golden outputs and NumPy."""
import numpy as np
import pytest
import tensorflow as tf

from common.ops import affinity


@pytest.mark.parametrize('size', [1, 2, 3])
def test_eightcorner_activation_matches_golden(golden, assert_golden, size):
    ins, outs, case = golden(f'aaf_eightcorner_activation_s{size}')
    y = affinity.eightcorner_activation(tf.constant(ins['x']), case['scalars']['size'])
    assert y.shape == outs['y'].shape
    assert_golden(y, outs['y'], case['tolerance']['out_y'])


@pytest.mark.parametrize('size', [1, 2, 3])
def test_ignores_from_label_matches_golden(golden, assert_golden, size):
    ins, outs, case = golden(f'aaf_ignores_from_label_s{size}')
    ignore = affinity.ignores_from_label(tf.constant(ins['labels']), case['scalars']['num_classes'],
                                         case['scalars']['size'])
    assert ignore.dtype == tf.bool
    assert_golden(ignore, outs['ignore'], case['tolerance']['out_ignore'])


@pytest.mark.parametrize('size', [1, 2, 3])
def test_edges_from_label_matches_golden(golden, assert_golden, size):
    ins, outs, case = golden(f'aaf_edges_from_label_s{size}')
    edge = affinity.edges_from_label(tf.constant(ins['one_hot']), case['scalars']['size'],
                                     case['scalars']['ignore_class'])
    assert edge.dtype == tf.bool
    assert_golden(edge, outs['edge'], case['tolerance']['out_edge'])


def _numpy_neighbour(x, dy, dx, mode):
    """x[:, y+dy, x+dx] with zero ('constant') or mirror ('symmetric') padding."""
    pad = max(abs(dy), abs(dx))
    padded = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)], mode=mode)
    h, w = x.shape[1:3]
    return padded[:, pad + dy:pad + dy + h, pad + dx:pad + dx + w]


def test_eightcorner_offsets_match_numpy():
    x = np.random.default_rng(1).normal(size=(1, 5, 6, 2)).astype(np.float32)
    y = affinity.eightcorner_activation(x, 2).numpy()
    for k, (dy, dx) in enumerate(affinity.EIGHTCORNER_OFFSETS):
        np.testing.assert_array_equal(y[..., k], _numpy_neighbour(x, 2 * dy, 2 * dx, 'constant'))


def test_eightway_activation_order_and_symmetric_padding():
    x = np.random.default_rng(2).normal(size=(2, 4, 5, 3)).astype(np.float32)
    y = affinity.eightway_activation(x).numpy()
    # left, right, up, down, left-up, left-down, right-up, right-down
    order = [(0, -1), (0, 1), (-1, 0), (1, 0), (-1, -1), (1, -1), (-1, 1), (1, 1)]
    for k, (dy, dx) in enumerate(order):
        np.testing.assert_array_equal(y[..., k], _numpy_neighbour(x, dy, dx, 'symmetric'))


def test_wrong_rank_is_rejected():
    with pytest.raises(ValueError, match='4-D'):
        affinity.eightcorner_activation(np.zeros((2, 3, 4), np.float32), 1)
    with pytest.raises(ValueError, match='3-D'):
        affinity.ignores_from_label(np.zeros((2, 3, 4, 1), np.uint8), 3, 1)
