"""PyTorch-semantics layers vs independent NumPy references (NCHW / OIHW, as PyTorch computes them)."""
import numpy as np
import pytest

import keras

from common.models import torch_layers
from common.models.naming import original_name


# ---- NumPy references in PyTorch layout (also used by test_resnet38.py and test_vgg16.py) ----

def np_conv2d(x, w, b=None, stride=1, padding=0, dilation=1):
    """PyTorch F.conv2d on NCHW x and OIHW w."""
    n, c, h, wd = x.shape
    o, ci, kh, kw = w.shape
    assert ci == c
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    ow = (wd + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    out = np.zeros((n, o, oh, ow), np.float64)
    for ky in range(kh):
        for kx in range(kw):
            y0, x0 = ky * dilation, kx * dilation
            patch = xp[:, :, y0:y0 + stride * (oh - 1) + 1:stride, x0:x0 + stride * (ow - 1) + 1:stride]
            out += np.einsum('nchw,oc->nohw', patch, w[:, :, ky, kx])
    if b is not None:
        out += b[None, :, None, None]
    return out


def np_max_pool2d(x, k, stride, padding, ceil_mode=False):
    """PyTorch F.max_pool2d on NCHW x: windows clipped to the input (padding never wins)."""
    n, c, h, w = x.shape

    def out_len(size):
        span = size + 2 * padding - k
        if ceil_mode:
            out = int(np.ceil(span / stride)) + 1
            if (out - 1) * stride >= size + padding:
                out -= 1
            return out
        return span // stride + 1

    oh, ow = out_len(h), out_len(w)
    out = np.empty((n, c, oh, ow), x.dtype)
    for i in range(oh):
        for j in range(ow):
            y0, x0 = i * stride - padding, j * stride - padding
            win = x[:, :, max(y0, 0):min(y0 + k, h), max(x0, 0):min(x0 + k, w)]
            out[:, :, i, j] = win.max(axis=(2, 3))
    return out


def np_batch_norm(x, weight, bias, mean, var, eps=1e-5):
    """PyTorch BatchNorm2d in eval mode, NCHW."""
    sh = (1, -1, 1, 1)
    return (x - mean.reshape(sh)) / np.sqrt(var.reshape(sh) + eps) * weight.reshape(sh) + bias.reshape(sh)


def to_nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


def to_nchw(x):
    return np.transpose(np.asarray(x), (0, 3, 1, 2))


# ---- tests ----

@pytest.mark.parametrize('kernel,stride,padding,dilation,bias,size', [
    (3, 2, 1, 1, False, (9, 8)),   # PyTorch pads 1 on both sides; TF SAME would pad only bottom/right
    (3, 1, 2, 2, True, (7, 6)),
    (3, 1, 4, 4, False, (5, 9)),
    (1, 2, 0, 1, False, (7, 7)),
])
def test_torch_conv2d_matches_pytorch_reference(kernel, stride, padding, dilation, bias, size):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3) + size).astype(np.float32)
    w = rng.standard_normal((5, 3, kernel, kernel)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32) if bias else None
    layer = torch_layers.TorchConv2D(5, kernel, strides=stride, padding=padding, dilation_rate=dilation,
                                     use_bias=bias, original_name='blk.conv')
    layer.build((None, None, None, 3))
    layer.kernel.assign(w.transpose(2, 3, 1, 0))
    if bias:
        layer.bias.assign(b)
    got = to_nchw(layer(to_nhwc(x)))
    want = np_conv2d(x.astype(np.float64), w.astype(np.float64), b, stride, padding, dilation)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert original_name(layer.kernel) == 'blk.conv.weight'
    if bias:
        assert original_name(layer.bias) == 'blk.conv.bias'


def test_torch_conv2d_default_init_is_pytorch_uniform():
    layer = torch_layers.TorchConv2D(64, 3, use_bias=True)
    layer.build((None, None, None, 32))
    bound = 1.0 / np.sqrt(32 * 9)
    k, b = np.asarray(layer.kernel), np.asarray(layer.bias)
    assert np.abs(k).max() <= bound + 1e-7 and np.abs(k).max() > 0.9 * bound
    assert np.abs(b).max() <= bound + 1e-7 and np.abs(b).max() > 0.5 * bound


@pytest.mark.parametrize('size', [(9, 8), (6, 7), (1, 2)])
def test_max_pool_pads_with_minus_inf(size):
    rng = np.random.default_rng(1)
    x = -np.abs(rng.standard_normal((1, 2) + size)).astype(np.float32) - 0.5  # all negative: zero padding would win
    got = to_nchw(torch_layers.TorchMaxPool2D(3, 2, 1)(to_nhwc(x)))
    want = np_max_pool2d(x, 3, 2, 1)
    np.testing.assert_array_equal(got, want)
    assert got.shape[2:] == tuple(-(-s // 2) for s in size)  # ceil(H/2): output stride bookkeeping of VGG


def test_max_pool_stride1_and_ceil_mode():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 3, 6, 5)).astype(np.float32) - 3
    got = to_nchw(torch_layers.TorchMaxPool2D(3, 1, 1)(to_nhwc(x)))
    np.testing.assert_array_equal(got, np_max_pool2d(x, 3, 1, 1))
    for k, s, p, size in [(2, 2, 0, (5, 7)), (3, 2, 1, (6, 8)), (3, 2, 0, (6, 9))]:
        xx = rng.standard_normal((1, 2) + size).astype(np.float32) - 3
        got = to_nchw(torch_layers.TorchMaxPool2D(k, s, p, ceil_mode=True)(to_nhwc(xx)))
        want = np_max_pool2d(xx, k, s, p, ceil_mode=True)
        assert got.shape == want.shape, (k, s, p, size)
        np.testing.assert_array_equal(got, want)
    # PyTorch's documented values: L=5,k=2,s=2 -> 3 with ceil_mode, 2 without.
    assert torch_layers.max_pool_output_size(5, 2, 2, 0, ceil_mode=True) == 3
    assert torch_layers.max_pool_output_size(5, 2, 2, 0) == 2


def test_frozen_batch_norm_uses_running_stats_even_in_training():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 3, 5)).astype(np.float32)
    params = [rng.uniform(0.5, 1.5, 5).astype(np.float32), rng.standard_normal(5).astype(np.float32),
              rng.standard_normal(5).astype(np.float32), rng.uniform(0.01, 2.0, 5).astype(np.float32)]
    bn = torch_layers.FrozenBatchNorm(original_name='b2.bn_branch2a')
    bn.build((None, None, None, 5))
    for var, value in zip((bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance), params):
        var.assign(value)
    want = to_nhwc(np_batch_norm(to_nchw(x), *params, eps=1e-5))
    np.testing.assert_allclose(bn(x, training=True), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn(x, training=False), want, rtol=1e-5, atol=1e-5)
    # eps 1e-5 (not Keras' 1e-3) matters for small variances
    assert abs(bn.epsilon - 1e-5) < 1e-12
    assert bn.trainable_weights == []
    assert [original_name(v) for v in bn.weights] == [
        'b2.bn_branch2a.weight', 'b2.bn_branch2a.bias', 'b2.bn_branch2a.running_mean', 'b2.bn_branch2a.running_var']
    np.testing.assert_allclose(np.asarray(bn.moving_mean), params[2])  # never updated



def test_trainable_batch_norm_batch_statistics_and_moving_averages():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 4, 3, 5)).astype(np.float32) * 3 + 1
    bn = torch_layers.TrainableBatchNorm(0.9, original_name='b2.bn_branch2a')
    bn.build((None, None, None, 5))
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    want = (x - mean) / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(bn(x, training=True), want, rtol=1e-4, atol=1e-4)
    # moving averages with decay 0.9 from mean 0 / var 1 (Keras updates with the biased batch variance)
    np.testing.assert_allclose(np.asarray(bn.moving_mean), 0.1 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(bn.moving_variance), 0.9 + 0.1 * var, rtol=1e-5)
    np.testing.assert_allclose(bn(x, training=False),
                               (x - 0.1 * mean) / np.sqrt(0.9 + 0.1 * var + 1e-5), rtol=1e-4, atol=1e-4)
    assert len(bn.trainable_weights) == 2
    assert [original_name(v) for v in (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance)] == [
        'b2.bn_branch2a.weight', 'b2.bn_branch2a.bias', 'b2.bn_branch2a.running_mean', 'b2.bn_branch2a.running_var']


def test_dropout2d_drops_whole_channels_and_rescales():
    x = np.ones((4, 5, 6, 64), np.float32)
    layer = torch_layers.Dropout2d(0.5, seed=7)
    y = np.asarray(layer(x, training=True))
    per_channel = y.reshape(4, 30, 64)
    assert np.all(per_channel.min(axis=1) == per_channel.max(axis=1))  # constant over space
    assert set(np.unique(y)) <= {0.0, 2.0}
    assert 0.2 < (y == 0).mean() < 0.8
    np.testing.assert_array_equal(layer(x, training=False), x)


def test_freeze_layers_by_prefix():
    inp = keras.Input((None, None, 3))
    y = torch_layers.TorchConv2D(2, 1, name='b2.conv_branch2a')(inp)
    y = torch_layers.TorchConv2D(2, 1, name='b2_1.conv_branch2a')(y)
    model = keras.Model(inp, y)
    torch_layers.freeze_layers(model, ['b2'])
    assert [l.trainable for l in model.layers[1:]] == [False, True]
    with pytest.raises(ValueError, match='b9'):
        torch_layers.freeze_layers(model, ['b9'])


def test_layers_survive_config_round_trip():
    inp = keras.Input((None, None, 3))
    y = torch_layers.TorchConv2D(4, 3, strides=2, padding=1, use_bias=True, original_name='c', name='c')(inp)
    y = torch_layers.FrozenBatchNorm(name='bn')(y)
    y = torch_layers.TorchMaxPool2D(3, 2, 1, name='pool')(y)
    y = torch_layers.Dropout2d(0.5, name='drop')(y)
    model = keras.Model(inp, y)
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    x = np.random.default_rng(4).standard_normal((1, 9, 7, 3)).astype(np.float32)
    np.testing.assert_array_equal(clone(x), model(x))
    assert clone.get_layer('c').padding == (1, 1) and clone.get_layer('drop').rate == 0.5
