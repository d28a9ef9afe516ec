"""VGG-16-D (LargeFOV): parameter table, names, pooling/dilation conventions vs a NumPy re-implementation."""
import numpy as np
import pytest

from common.models import vgg16
from common.models.naming import original_name
from common.weights.torch_convert import load_torch_state_dict
from test_torch_layers import np_conv2d, np_max_pool2d, to_nchw, to_nhwc

WIDTHS = (4, 6, 8, 8, 10, 12)


def _random_state_dict(rng):
    sd = {}
    for key, shape in vgg16.vgg16_weight_shapes(widths=WIDTHS).items():
        if len(shape) == 4:
            sd[key] = (rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))).astype(np.float32)
        else:
            sd[key] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
    return sd


def _np_forward(sd, x, fc6_dilation):
    """psa vgg16d.Net.forward_as_dict in NumPy (NCHW), written out layer by layer."""
    sd = {k: v.astype(np.float64) for k, v in sd.items()}

    def conv(name, t, pad=1, dil=1):
        return np.maximum(np_conv2d(t, sd[name + '.weight'], sd[name + '.bias'], 1, pad, dil), 0)

    t = conv('conv1_2', conv('conv1_1', x))
    t = np_max_pool2d(t, 3, 2, 1)
    t = conv('conv2_2', conv('conv2_1', t))
    t = np_max_pool2d(t, 3, 2, 1)
    t = conv('conv3_3', conv('conv3_2', conv('conv3_1', t)))
    t = np_max_pool2d(t, 3, 2, 1)
    conv4 = t = conv('conv4_3', conv('conv4_2', conv('conv4_1', t)))
    t = np_max_pool2d(t, 3, 1, 1)
    conv5 = t = conv('conv5_3', conv('conv5_2', conv('conv5_1', t, 2, 2), 2, 2), 2, 2)
    t = conv('fc6', t, fc6_dilation, fc6_dilation)
    conv5fc = conv('fc7', t, 0)
    return {'conv4': conv4, 'conv5': conv5, 'conv5fc': conv5fc}


def test_full_size_table_is_the_20m_variant():
    shapes = vgg16.vgg16_weight_shapes()
    assert sum(int(np.prod(s)) for s in shapes.values()) == 20_483_904
    assert shapes['fc6.weight'] == (1024, 512, 3, 3) and shapes['fc7.weight'] == (1024, 1024, 1, 1)
    assert len(shapes) == 2 * 15  # 13 convs + fc6 + fc7, weight and bias each


@pytest.mark.parametrize('fc6_dilation', [1, 4])
def test_forward_matches_numpy_reference(fc6_dilation):
    rng = np.random.default_rng(fc6_dilation)
    sd = _random_state_dict(rng)
    model = vgg16.build_vgg16d(fc6_dilation=fc6_dilation, widths=WIDTHS)
    assert {original_name(v) for v in model.weights} == set(sd)
    restored, missing, unexpected = load_torch_state_dict(model, sd, strict=True)
    assert len(restored) == len(sd)
    x = rng.standard_normal((1, 3, 21, 26)).astype(np.float32)
    got = model(to_nhwc(x), training=False)
    want = _np_forward(sd, x.astype(np.float64), fc6_dilation)
    for key, channels in (('conv4', 8), ('conv5', 10), ('conv5fc', 12)):
        g = to_nchw(got[key])
        assert g.shape == (1, channels, 3, 4), key  # ceil(ceil(ceil(21/2)/2)/2), same for 26
        np.testing.assert_allclose(g, want[key], rtol=1e-4, atol=1e-4 * np.abs(want[key]).max(), err_msg=key)


def test_fc6_dilation_changes_output_and_dropout_is_training_only():
    rng = np.random.default_rng(5)
    sd = _random_state_dict(rng)
    x = rng.standard_normal((2, 40, 40, 3)).astype(np.float32)
    outs = {}
    for dil in (1, 4):
        model = vgg16.build_vgg16d(fc6_dilation=dil, widths=WIDTHS, return_endpoints=('conv5fc',))
        load_torch_state_dict(model, sd, strict=True)
        outs[dil] = np.asarray(model(x, training=False)['conv5fc'])
    assert outs[1].shape == (2, 5, 5, 12)
    assert not np.allclose(outs[1], outs[4])
    assert not np.allclose(model(x, training=True)['conv5fc'], outs[4])


def test_not_training_and_reduced_width():
    model = vgg16.build_vgg16d(width_multiplier=1 / 16, not_training=vgg16.NOT_TRAINING,
                               return_endpoints=('conv5fc',))
    trainable = {original_name(v) for v in model.trainable_weights}
    assert 'conv3_1.weight' in trainable and 'fc7.bias' in trainable
    assert not any(n.startswith(('conv1_', 'conv2_')) for n in trainable)
    assert tuple(model.output['conv5fc'].shape) == (None, None, None, 64)
