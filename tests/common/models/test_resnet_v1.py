"""ResNet v1 builder: golden parity with the original (TF1 checkpoint), names/shapes, structure."""
import pathlib

import numpy as np
import pytest

from common.models.naming import in_original_order, original_name
from common.models.resnet_v1 import build_resnet_v1, resnet_v1_50
from common.weights.slim import load_slim_checkpoint

GOLDEN = pathlib.Path(__file__).parents[2] / 'golden' / 'aaf_segsort'


def restore_golden_checkpoint(model, outs, scalars):
    """Loads a golden case's TF1 checkpoint with the Slim loader and checks that every variable was restored and
    that names, order (TF1 creation order) and shapes equal the original graph's (shared by the head tests)."""
    restored, missing, unexpected = load_slim_checkpoint(model, GOLDEN / scalars['checkpoint'])
    assert (len(restored), missing, unexpected) == (len(outs['var_names']), [], [])
    variables = in_original_order(model.variables)
    assert [original_name(v) for v in variables] == [str(n) for n in outs['var_names']]
    shapes = [tuple(v.shape) for v in variables]
    assert shapes == [tuple(int(d) for d in row[:nd]) for row, nd in zip(outs['var_shapes'], outs['var_ndims'])]
    assert [len(sh) for sh in shapes] == list(outs['var_ndims'])
    return variables


def test_resnet_v1_small_matches_original(golden, assert_golden):
    ins, outs, case = golden('resnet_v1_small')
    s = case['scalars']
    model = build_resnet_v1(filters=s['filters'], num_blocks=s['num_blocks'], strides=s['strides'],
                            dilations=s['dilations'], use_global_status=s['use_global_status'], name=s['scope'],
                            return_endpoints=True)
    restore_golden_checkpoint(model, outs, s)

    got = model(ins['image'], training=False)
    tol = case['tolerance']
    assert_golden(got['block4'], outs['features'], tol['out_features'])
    for endpoint in ('conv1', 'pool1', 'block1', 'block2', 'block3'):
        assert_golden(got[endpoint], outs[f'debug_{endpoint}'], tol[f'out_debug_{endpoint}'])
    # use_global_status: training=True must not switch to batch statistics.
    np.testing.assert_array_equal(model(ins['image'], training=True)['block4'].numpy(), got['block4'].numpy())


def test_output_shapes_and_presets():
    model = build_resnet_v1(filters=(2, 2, 2, 2), num_blocks=(1, 1, 1, 1))
    out = model(np.zeros((1, 33, 17, 3), np.float32))
    assert out.shape == (1, 5, 3, 8)  # ceil(ceil(ceil(33/2)/2)/2), 4*filters[-1]
    small50 = resnet_v1_50(filters=(1, 2, 4, 8))  # distinct widths: every block starts with a shortcut conv
    kernels = [v for v in small50.variables if original_name(v).endswith('/weights')]
    assert len(kernels) == 1 + 3 * (3 + 4 + 6 + 3) + 4  # conv1 + 3 per unit + one shortcut conv per block
    assert all(original_name(v).startswith('resnet_v1_50/') for v in small50.variables)


def test_training_flags_control_trainable_variables():
    frozen = build_resnet_v1(filters=(2, 2, 2, 2), num_blocks=(1, 1, 1, 1), use_global_status=True)
    names = [original_name(v) for v in frozen.trainable_variables]
    assert names and all(n.endswith('/weights') for n in names)  # Q-A8: beta/gamma frozen with global status
    free = build_resnet_v1(filters=(2, 2, 2, 2), num_blocks=(1, 1, 1, 1), use_global_status=False)
    assert len(free.trainable_variables) == len(names) * 3
    no_train = build_resnet_v1(filters=(2, 2, 2, 2), num_blocks=(1, 1, 1, 1), is_training=False)
    assert no_train.trainable_variables == []


def test_bad_block_lists_raise():
    with pytest.raises(ValueError, match='same length'):
        build_resnet_v1(filters=(2, 2, 2), num_blocks=(1, 1, 1, 1))
