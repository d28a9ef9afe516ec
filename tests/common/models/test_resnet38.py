"""ResNet-38 "38d": weight counts, names, strides and a full forward pass vs a NumPy re-implementation."""
import numpy as np
import pytest

from common.models import resnet38
from common.models.naming import original_name
from common.weights.torch_convert import load_torch_state_dict
from test_torch_layers import np_batch_norm, np_conv2d, to_nchw, to_nhwc

WIDTH = 1 / 16  # widths 4, 8, 16, 32, 64, 128, 256


def _units_written_out():
    """The unit list of psa resnet38d.Net, written out independently of the module's table.
    (name, kind, in, mid, out, stride, first_dilation, dilation) with widths from the full model divided by 16."""
    d = 16
    units = [('b2', 'basic', 64, 128, 128, 2, 1, 1), ('b2_1', 'basic', 128, 128, 128, 1, 1, 1),
             ('b2_2', 'basic', 128, 128, 128, 1, 1, 1), ('b3', 'basic', 128, 256, 256, 2, 1, 1),
             ('b3_1', 'basic', 256, 256, 256, 1, 1, 1), ('b3_2', 'basic', 256, 256, 256, 1, 1, 1),
             ('b4', 'basic', 256, 512, 512, 2, 1, 1)]
    units += [(f'b4_{i}', 'basic', 512, 512, 512, 1, 1, 1) for i in range(1, 6)]
    units += [('b5', 'basic', 512, 512, 1024, 1, 1, 2), ('b5_1', 'basic', 1024, 512, 1024, 1, 2, 2),
              ('b5_2', 'basic', 1024, 512, 1024, 1, 2, 2), ('b6', 'bot', 1024, None, 2048, 1, 4, 4),
              ('b7', 'bot', 2048, None, 4096, 1, 4, 4)]
    return [(n, k, i // d, None if m is None else m // d, o // d, s, fd, dl) for n, k, i, m, o, s, fd, dl in units]


def _random_state_dict(rng):
    """Synthetic PSA state dict (PyTorch layout) at WIDTH, with activations kept O(1)."""
    sd = {}
    for key, shape in resnet38.resnet38_weight_shapes(WIDTH).items():
        if len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            sd[key] = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
        elif key.endswith('running_var'):
            sd[key] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        elif key.endswith('weight'):
            sd[key] = rng.uniform(0.5, 1.0, shape).astype(np.float32)
        else:
            sd[key] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
    return sd


def _np_forward(sd, x):
    """NumPy forward of psa resnet38d.Net.forward_as_dict (+ A2GNN's conv1-3), NCHW, float64."""
    sd = {k: v.astype(np.float64) for k, v in sd.items()}

    def bn_relu(p, t):
        return np.maximum(np_batch_norm(t, sd[p + '.weight'], sd[p + '.bias'], sd[p + '.running_mean'],
                                        sd[p + '.running_var']), 0)

    out = {}
    t = np_conv2d(x, sd['conv1a.weight'], padding=1)
    for name, kind, cin, mid, cout, stride, first_dil, dil in _units_written_out():
        a = bn_relu(f'{name}.bn_branch2a', t)
        if kind == 'basic':
            shortcut = t if (cin == cout and stride == 1) else np_conv2d(a, sd[f'{name}.conv_branch1.weight'],
                                                                         stride=stride)
            y = np_conv2d(a, sd[f'{name}.conv_branch2a.weight'], stride=stride, padding=first_dil,
                          dilation=first_dil)
            y = np_conv2d(bn_relu(f'{name}.bn_branch2b1', y), sd[f'{name}.conv_branch2b1.weight'], padding=dil,
                          dilation=dil)
        else:
            shortcut = np_conv2d(a, sd[f'{name}.conv_branch1.weight'])
            y = np_conv2d(a, sd[f'{name}.conv_branch2a.weight'])
            y = np_conv2d(bn_relu(f'{name}.bn_branch2b1', y), sd[f'{name}.conv_branch2b1.weight'], padding=dil,
                          dilation=dil)
            y = np_conv2d(bn_relu(f'{name}.bn_branch2b2', y), sd[f'{name}.conv_branch2b2.weight'])
        key = {'b2': 'conv1', 'b3': 'conv2', 'b4': 'conv3', 'b5': 'conv4', 'b6': 'conv5'}.get(name)
        if key:
            out[key] = a
        t = shortcut + y
    out['conv6'] = bn_relu('bn7', t)
    return out


def test_full_size_weight_counts_from_the_spec_table():
    assert resnet38.resnet38_num_conv_weights() == resnet38.RESNET38_NUM_CONV_WEIGHTS == 105_023_168
    assert resnet38.resnet38_num_bn_affine() == 47_744
    shapes = resnet38.resnet38_weight_shapes()
    assert shapes['b5.conv_branch2a.weight'] == (512, 512, 3, 3)
    assert shapes['b5.conv_branch2b1.weight'] == (1024, 512, 3, 3)
    assert shapes['b6.conv_branch2b1.weight'] == (1024, 512, 3, 3)
    assert shapes['b7.conv_branch2b2.weight'] == (4096, 2048, 1, 1)
    assert 'b2_1.conv_branch1.weight' not in shapes and 'b5_1.conv_branch1.weight' not in shapes


@pytest.fixture(scope='module')
def small_model():
    return resnet38.build_resnet38(width_multiplier=WIDTH, return_endpoints=resnet38.ENDPOINTS)


def test_reduced_build_matches_table_and_names(small_model):
    model = small_model
    shapes = resnet38.resnet38_weight_shapes(WIDTH)
    names = {original_name(v): tuple(v.shape) for v in model.weights}
    assert set(names) == set(shapes)
    for key, shape in shapes.items():  # HWIO for convs
        assert names[key] == (tuple(shape[2:]) + (shape[1], shape[0]) if len(shape) == 4 else shape), key
    conv_count = sum(int(np.prod(s)) for s in names.values() if len(s) == 4)
    assert conv_count == resnet38.resnet38_num_conv_weights(WIDTH)
    # BN (gamma, beta, stats) are never trainable; with no not_training every conv is.
    trainable = {original_name(v) for v in model.trainable_weights}
    assert trainable == {k for k, s in shapes.items() if len(s) == 4}


def test_full_size_build_has_105m_conv_weights():
    model = resnet38.build_resnet38(kernel_initializer='zeros', return_endpoints=('conv6',))
    conv = sum(int(np.prod(v.shape)) for v in model.weights if len(v.shape) == 4)
    assert conv == 105_023_168
    assert sum(int(np.prod(v.shape)) for v in model.weights if len(v.shape) == 1) == 2 * 47_744  # + running stats


def test_forward_matches_numpy_reference_and_output_stride(small_model):
    rng = np.random.default_rng(0)
    sd = _random_state_dict(rng)
    model = small_model
    restored, missing, unexpected = load_torch_state_dict(model, sd)
    assert not missing and not unexpected and len(restored) == len(sd)
    x = rng.standard_normal((1, 3, 17, 22)).astype(np.float32)  # odd/even sizes: symmetric padding matters
    got = model(to_nhwc(x), training=False)
    want = _np_forward(sd, x.astype(np.float64))
    channels = {'conv1': 4, 'conv2': 8, 'conv3': 16, 'conv4': 32, 'conv5': 64, 'conv6': 256}
    sizes = {'conv1': (17, 22), 'conv2': (9, 11), 'conv3': (5, 6), 'conv4': (3, 3), 'conv5': (3, 3),
             'conv6': (3, 3)}
    for key in resnet38.ENDPOINTS:
        g = to_nchw(got[key])
        assert g.shape == (1, channels[key]) + sizes[key], key
        scale = np.abs(want[key]).max()
        np.testing.assert_allclose(g, want[key], rtol=1e-4, atol=1e-4 * scale, err_msg=key)


def test_output_stride_8_and_dropout_only_in_training(small_model):
    model = small_model
    x = np.random.default_rng(1).standard_normal((2, 33, 40, 3)).astype(np.float32)
    eval_a, eval_b = model(x, training=False), model(x, training=False)
    assert tuple(eval_a['conv6'].shape) == (2, 5, 5, 256)  # ceil(33/8), ceil(40/8)
    assert tuple(eval_a['conv4'].shape) == (2, 5, 5, 32)
    np.testing.assert_array_equal(eval_a['conv6'], eval_b['conv6'])
    train = model(x, training=True)
    np.testing.assert_array_equal(train['conv4'], eval_a['conv4'])  # no dropout before b6
    assert not np.allclose(train['conv6'], eval_a['conv6'])


def test_not_training_freezes_whole_units():
    model = resnet38.build_resnet38(width_multiplier=WIDTH, not_training=resnet38.NOT_TRAINING['psa_aff'])
    trainable = {original_name(v) for v in model.trainable_weights}
    assert 'b3.conv_branch2a.weight' in trainable and 'b7.conv_branch2b2.weight' in trainable
    assert not any(n.startswith(('conv1a.', 'b2.', 'b2_1.', 'b2_2.')) for n in trainable)
    assert not any('.bn' in n or n.startswith('bn7') for n in trainable)


def test_bad_widths_raise():
    with pytest.raises(ValueError, match='7 entries'):
        resnet38.build_resnet38(widths=(4, 8, 16))
    with pytest.raises(ValueError, match='return_endpoints'):
        resnet38.build_resnet38(width_multiplier=WIDTH, return_endpoints=('conv7',))


def test_bn_decay_trains_batch_norm_with_the_same_names():
    frozen = resnet38.build_resnet38(1 / 16, return_endpoints=('conv6',))
    trained = resnet38.build_resnet38(1 / 16, return_endpoints=('conv6',), bn_decay=0.9)
    assert sorted(original_name(v) for v in frozen.weights) == sorted(original_name(v) for v in trained.weights)
    trainable = {original_name(v) for v in trained.trainable_weights}
    assert 'bn7.weight' in trainable and 'b2.bn_branch2a.bias' in trainable
    assert not any('bn' in original_name(v) for v in frozen.trainable_weights)
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32) * 5
    y = trained(x, training=True)['conv6'].numpy()
    assert 0.2 < y.std() < 2.0  # normalised by batch statistics (frozen BN from scratch lets it drift)
