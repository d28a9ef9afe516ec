"""TF1-semantics layers (common/models/layers.py) against independent NumPy references."""
import numpy as np
import pytest
import tensorflow as tf

from common.models import layers as nn
from common.models.naming import original_name
from common.train.strategy import make_strategy


def _np_conv(x, kernel, stride=1, pads=(0, 0), dilation=1):
    """Cross-correlation of NHWC x with HWIO kernel after zero padding pads=(begin, end) on H and W."""
    x = np.pad(x, [(0, 0), pads, pads, (0, 0)])
    k = kernel.shape[0]
    eff = (k - 1) * dilation + 1
    oh = (x.shape[1] - eff) // stride + 1
    ow = (x.shape[2] - eff) // stride + 1
    out = np.zeros((x.shape[0], oh, ow, kernel.shape[3]), np.float64)
    for i in range(k):
        for j in range(k):
            patch = x[:, i * dilation:i * dilation + stride * (oh - 1) + 1:stride,
                      j * dilation:j * dilation + stride * (ow - 1) + 1:stride, :]
            out += patch @ kernel[i, j]
    return out


def _rng():
    return np.random.default_rng(1234)


@pytest.mark.parametrize('kernel_size,size', [(3, 9), (3, 10), (7, 13), (1, 7)])
def test_strided_conv_is_conv2d_same(kernel_size, size):
    x = _rng().normal(size=(2, size, size + 1, 3)).astype(np.float32)
    layer = nn.Conv2DTF1(4, kernel_size, strides=2, padding='VALID', biased=False, original_scope='net/c')
    y = layer(x).numpy()
    begin, end = (kernel_size - 1) // 2, kernel_size - 1 - (kernel_size - 1) // 2
    expected = _np_conv(x, layer.kernel.numpy(), 2, (begin, end))
    assert y.shape == expected.shape == layer.compute_output_shape(x.shape)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('dilation', [2, 4])
def test_atrous_conv_same_pads_symmetrically(dilation):
    x = _rng().normal(size=(1, 11, 9, 2)).astype(np.float32)
    layer = nn.Conv2DTF1(3, 3, padding='SAME', dilation=dilation, biased=True, original_scope='net/a')
    y = layer(x).numpy()
    expected = _np_conv(x, layer.kernel.numpy(), 1, (dilation, dilation), dilation) + layer.bias.numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_conv_helper_names_and_initialisers():
    x = tf.keras.Input((8, 8, 16))
    model = tf.keras.Model(x, nn.conv(x, 'net/block5/fc', 4, 3, 2, 'VALID', relu=True, biased=True, bn=True))
    assert sorted(original_name(v) for v in model.variables) == sorted(
        ['net/block5/fc/weights', 'net/block5/fc/biases'] +
        [f'net/block5/fc/BatchNorm/{n}' for n in ('beta', 'gamma', 'moving_mean', 'moving_variance')])
    assert model.output.shape == (None, 4, 4, 4)
    assert np.all(model(np.random.default_rng(0).normal(size=(1, 8, 8, 16))).numpy() >= 0)  # ReLU applied
    layer = nn.Conv2DTF1(300, 3, biased=True, original_scope='net/big')
    layer.build((None, 5, 5, 40))
    assert original_name(layer.kernel) == 'net/big/weights' and original_name(layer.bias) == 'net/big/biases'
    assert layer.kernel.path == 'net/big/weights'
    # glorot_uniform: kernel U(+-sqrt(6/(9*40+9*300))), 1-D bias U(+-sqrt(3/300)) (Q-A11).
    for values, limit in ((layer.kernel.numpy(), np.sqrt(6 / (9 * 340))), (layer.bias.numpy(), np.sqrt(3 / 300))):
        assert np.abs(values).max() <= limit and np.abs(values).max() > 0.9 * limit
    msra = nn.Conv2DTF1(300, 3, biased=False, kernel_initializer='msra_uniform', original_scope='net/msra')
    msra.build((None, 5, 5, 40))
    limit = np.sqrt(6 / (9 * 40))
    assert limit * 0.9 < np.abs(msra.kernel.numpy()).max() <= limit
    with pytest.raises(ValueError, match='msra_uniform'):
        nn.Conv2DTF1(3, 3, kernel_initializer='he', original_scope='x').build((None, 4, 4, 1))


def test_max_pool_pads_symmetrically_then_valid():
    x = _rng().normal(size=(1, 10, 7, 2)).astype(np.float32)
    y = nn.PoolTF1(3, 2, 'VALID', 'max')(x).numpy()
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])  # zero pad, even with negative inputs
    oh, ow = (padded.shape[1] - 3) // 2 + 1, (padded.shape[2] - 3) // 2 + 1
    expected = np.full((1, oh, ow, 2), -np.inf, np.float32)
    for i in range(3):
        for j in range(3):
            expected = np.maximum(expected, padded[:, i:i + 2 * (oh - 1) + 1:2, j:j + 2 * (ow - 1) + 1:2])
    np.testing.assert_array_equal(y, expected)
    assert y.shape == (1, 5, 4, 2)
    # stride 1 or SAME: no explicit pad (avg over the valid window).
    avg = nn.PoolTF1(2, 1, 'VALID', 'avg')(x).numpy()
    np.testing.assert_allclose(avg, (x[:, :-1, :-1] + x[:, 1:, :-1] + x[:, :-1, 1:] + x[:, 1:, 1:]) / 4,
                               rtol=1e-6, atol=1e-6)


def _np_resize_legacy(x, out_h, out_w):
    def axis(n_in, n_out):
        src = np.arange(n_out) * (n_in / n_out)
        lo = np.minimum(np.floor(src).astype(int), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo
    y0, y1, fy = axis(x.shape[1], out_h)
    x0, x1, fx = axis(x.shape[2], out_w)
    top = x[:, y0][:, :, x0] * (1 - fx)[None, None, :, None] + x[:, y0][:, :, x1] * fx[None, None, :, None]
    bottom = x[:, y1][:, :, x0] * (1 - fx)[None, None, :, None] + x[:, y1][:, :, x1] * fx[None, None, :, None]
    return top * (1 - fy)[None, :, None, None] + bottom * fy[None, :, None, None]


@pytest.mark.parametrize('in_hw,out_hw', [((2, 2), (12, 12)), ((3, 5), (12, 7)), ((6, 6), (4, 9))])
def test_resize_bilinear_legacy_matches_corner_anchored_formula(in_hw, out_hw):
    x = _rng().normal(size=(2, *in_hw, 3)).astype(np.float32)
    y = nn.resize_bilinear_legacy(x, out_hw).numpy()
    np.testing.assert_allclose(y, _np_resize_legacy(x.astype(np.float64), *out_hw), rtol=1e-5, atol=1e-6)
    layer_out = nn.LegacyResizeBilinear(out_hw)(x).numpy()
    np.testing.assert_array_equal(layer_out, y)
    # and it is NOT TF2's half-pixel resize
    assert not np.allclose(tf.image.resize(x, out_hw).numpy(), y, atol=1e-3)


def _bn_inputs():
    x = _rng().normal(loc=2.0, scale=3.0, size=(4, 5, 6, 3)).astype(np.float32)
    return x


def test_batch_norm_training_mode_uses_biased_batch_moments_and_updates_with_decay():
    x = _bn_inputs()
    bn = nn.BatchNormTF1(decay=0.9, use_global_status=False, original_scope='net/c/BatchNorm')
    bn.build(x.shape)
    gamma = np.array([0.5, 1.5, 2.0], np.float32)
    beta = np.array([0.1, -0.2, 0.3], np.float32)
    bn.gamma.assign(gamma)
    bn.beta.assign(beta)
    bn.moving_mean.assign(np.array([1.0, 0.0, -1.0], np.float32))
    bn.moving_variance.assign(np.array([2.0, 1.0, 0.5], np.float32))
    y = bn(x, training=True).numpy()
    mean = x.astype(np.float64).mean(axis=(0, 1, 2))
    var = x.astype(np.float64).var(axis=(0, 1, 2))  # biased (ddof 0)
    np.testing.assert_allclose(y, gamma * (x - mean) / np.sqrt(var + 1e-3) + beta, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.moving_mean.numpy(), np.array([1.0, 0.0, -1.0]) * 0.9 + mean * 0.1, rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), np.array([2.0, 1.0, 0.5]) * 0.9 + var * 0.1,
                               rtol=1e-5)
    # inference: moving statistics, no update
    moving = bn.moving_mean.numpy().copy(), bn.moving_variance.numpy().copy()
    y_eval = bn(x, training=False).numpy()
    np.testing.assert_allclose(y_eval, gamma * (x - moving[0]) / np.sqrt(moving[1] + 1e-3) + beta,
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), moving[0])
    assert [original_name(v) for v in bn.weights] == [
        'net/c/BatchNorm/beta', 'net/c/BatchNorm/gamma', 'net/c/BatchNorm/moving_mean',
        'net/c/BatchNorm/moving_variance']
    assert len(bn.trainable_weights) == 2


def test_batch_norm_global_status_freezes_everything():
    x = _bn_inputs()
    bn = nn.BatchNormTF1(use_global_status=True, original_scope='net/g/BatchNorm')
    bn.build(x.shape)
    bn.moving_mean.assign(np.array([1.0, 2.0, 3.0], np.float32))
    bn.moving_variance.assign(np.array([4.0, 0.25, 1.0], np.float32))
    y = bn(x, training=True).numpy()
    np.testing.assert_allclose(y, (x - [1.0, 2.0, 3.0]) / np.sqrt(np.array([4.0, 0.25, 1.0]) + 1e-3),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(bn.moving_variance.numpy(), [4.0, 0.25, 1.0])
    assert bn.trainable_weights == []  # Q-A8: beta/gamma frozen too


def test_synchronized_batch_norm_equals_single_device_bn_on_the_global_batch():
    devices = [d.name for d in tf.config.list_logical_devices('CPU')][:2]
    if len(devices) < 2:
        pytest.skip('needs the 2 logical CPU devices that tests/conftest.py configures')
    x = _bn_inputs()
    weights = _rng().normal(size=x.shape).astype(np.float32)  # makes the loss gradient non-trivial

    reference = nn.BatchNormTF1(decay=0.5, use_global_status=False, original_scope='ref/BatchNorm')
    reference.build(x.shape)
    reference.gamma.assign([0.5, 1.5, 2.0])
    x_t = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x_t)
        y_ref = reference(x_t, training=True)
        loss_ref = tf.reduce_sum(y_ref * weights)
    grad_ref = tape.gradient(loss_ref, [x_t, reference.gamma, reference.beta])

    # One strategy per device set and process: a second MirroredStrategy over the same devices breaks the
    # collectives of the first (see common.train.strategy.make_strategy).
    strategy = make_strategy(devices=devices)
    with strategy.scope():
        sync = nn.BatchNormTF1(decay=0.5, use_global_status=False, synchronized=True, original_scope='s/BatchNorm')
        sync.build(x.shape)
        sync.gamma.assign([0.5, 1.5, 2.0])

    halves = (x[:1], x[1:])  # unequal replica batches: global moments must weight by count
    weight_halves = (weights[:1], weights[1:])

    inputs = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(halves[ctx.replica_id_in_sync_group]))
    loss_weights = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(weight_halves[ctx.replica_id_in_sync_group]))

    @tf.function
    def train_step(xs, ws):
        def replica_fn(xi, wi):
            with tf.GradientTape() as t:
                t.watch(xi)
                yi = sync(xi, training=True)
                li = tf.reduce_sum(yi * wi)
            gx, gg, gb = t.gradient(li, [xi, sync.gamma, sync.beta])
            ctx = tf.distribute.get_replica_context()
            gg, gb = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [gg, gb])
            return yi, gx, gg, gb
        return strategy.run(replica_fn, args=(xs, ws))

    y, gx, gg, gb = train_step(inputs, loss_weights)
    local = strategy.experimental_local_results
    np.testing.assert_allclose(np.concatenate([t.numpy() for t in local(y)]), y_ref.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.concatenate([t.numpy() for t in local(gx)]), grad_ref[0].numpy(),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(local(gg)[0].numpy(), grad_ref[1].numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(local(gb)[0].numpy(), grad_ref[2].numpy(), rtol=1e-4, atol=1e-4)
    for name in ('moving_mean', 'moving_variance'):
        expected = getattr(reference, name).numpy()
        for value in local(getattr(sync, name).value):
            np.testing.assert_allclose(value.numpy(), expected, rtol=1e-5, atol=1e-6)
