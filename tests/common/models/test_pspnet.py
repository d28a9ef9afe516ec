"""PSPNet builder: golden parity with the original (every debug branch), variable counts, input-size rule."""

import keras
import numpy as np
import pytest

from common.models.naming import original_name, original_names
from common.models.pspnet import build_pspnet
from test_resnet_v1 import restore_golden_checkpoint


def _small_backbone(s):
    return dict(filters=s['filters'], num_blocks=s['num_blocks'], strides=s['strides'], dilations=s['dilations'],
                name=s['scope'])


def test_pspnet_small_matches_original(golden, assert_golden):
    ins, outs, case = golden('pspnet_small')
    s = case['scalars']
    model = build_pspnet(s['num_classes'], ins['image'].shape[1], backbone=_small_backbone(s),
                         psp_channels=s['psp_channels'], use_global_status=s['use_global_status'],
                         head_bn_decay=s['head_bn_decay'], return_endpoints=True)
    restore_golden_checkpoint(model, outs, s)

    got = model(ins['image'], training=False)
    tol = case['tolerance']
    assert_golden(got['logits'], outs['logits'], tol['out_logits'])
    assert_golden(got['backbone'], outs['debug_backbone'], tol['out_debug_backbone'])
    assert_golden(got['conv2'], outs['debug_conv2'], tol['out_debug_conv2'])
    for n in (1, 2, 3, 6):
        for part in ('avg', 'conv', 'up'):
            key = f'pool{n}_{part}'
            assert_golden(got[key], outs[f'debug_{key}'], tol[f'out_debug_{key}'])


def test_variable_counts_match_the_original_training_graph():
    # Width does not change the counts: the original PSPNet-ResNet-101 in training mode has 547 variables,
    # 329 trainable = 110 kernels + 1 bias + 109 BN (beta, gamma) pairs.
    # Distinct block widths so that every block starts with a shortcut conv, as at full width.
    model = build_pspnet(21, 48, backbone=dict(filters=(1, 2, 4, 8)), psp_channels=2, use_global_status=False)
    names = [original_name(v) for v in model.trainable_variables]
    assert len(model.variables) == 547
    assert len(names) == 329
    assert sum(n.endswith('/weights') for n in names) == 110
    assert sum(n.endswith('/biases') for n in names) == 1
    assert sum(n.endswith('/BatchNorm/gamma') for n in names) == 109
    assert sum('block5' in n for n in names) == 6 + 5 * 2 + 1  # head kernels + head BN pairs + bias
    frozen = build_pspnet(21, 48, backbone=dict(filters=(1, 2, 4, 8), num_blocks=(1, 1, 1, 1)), psp_channels=2,
                          use_global_status=True)
    # Q-A8: with global status only conv kernels (1 + 4 * 4 backbone + 6 head) and the bias stay trainable.
    assert len(frozen.trainable_variables) == 17 + 6 + 1


@pytest.mark.parametrize('size', [50, (48, 96), 40])
def test_sizes_the_original_rejects_raise_with_hint(size):
    with pytest.raises(ValueError, match='adaptive_pooling=True'):
        build_pspnet(3, size, backbone=dict(filters=(1, 1, 1, 1), num_blocks=(1, 1, 1, 1)), psp_channels=2)


def test_adaptive_pooling_equals_valid_pools_when_they_tile():
    backbone = dict(filters=(1, 1, 1, 2), num_blocks=(1, 1, 1, 1))
    exact = build_pspnet(3, 48, backbone=backbone, psp_channels=2, return_endpoints=True)
    adaptive = build_pspnet(3, 48, backbone=backbone, psp_channels=2, adaptive_pooling=True,
                            return_endpoints=True)
    adaptive.set_weights(exact.get_weights())
    x = np.random.default_rng(0).normal(size=(1, 48, 48, 3)).astype(np.float32)
    a, b = exact(x), adaptive(x)
    for n in (1, 2, 3, 6):
        np.testing.assert_allclose(b[f'pool{n}_avg'].numpy(), a[f'pool{n}_avg'].numpy(), rtol=1e-5, atol=1e-6)
    # Other sizes work with the explicit option; the bins are adaptive (PyTorch-style) averages.
    odd = build_pspnet(3, 40, backbone=backbone, psp_channels=2, adaptive_pooling=True, return_endpoints=True)
    out = odd(x[:, :40, :40])
    feats = out['backbone'].numpy()  # 5 x 5
    np.testing.assert_allclose(out['pool2_avg'].numpy()[0, 0, 1], feats[0, 0:3, 2:5].mean(axis=(0, 1)),
                               rtol=1e-5, atol=1e-6)
    assert out['logits'].shape == (1, 5, 5, 3)


def test_training_call_uses_batch_stats_and_updates_with_head_and_backbone_decays():
    model = build_pspnet(3, 48, backbone=dict(filters=(1, 2, 4, 8), num_blocks=(1, 1, 1, 1)), psp_channels=2,
                         use_global_status=False)
    variables = original_names(model.variables)
    x = np.random.default_rng(3).normal(size=(2, 48, 48, 3)).astype(np.float32)
    pre_bn = keras.Model(model.input, [model.get_layer('resnet_v1_101.conv1').output,
                                       model.get_layer('resnet_v1_101.block5.conv2').output])
    logits_train = model(x, training=True).numpy()
    moved = {name: variables[name].numpy().copy() for name in (
        'resnet_v1_101/conv1/BatchNorm/moving_mean', 'resnet_v1_101/block5/conv2/BatchNorm/moving_mean',
        'resnet_v1_101/block5/conv2/BatchNorm/moving_variance')}
    # Batch-statistics activations do not depend on the moving averages (this call updates them once more).
    conv1, conv2 = (t.numpy() for t in pre_bn(x, training=True))
    np.testing.assert_allclose(moved['resnet_v1_101/conv1/BatchNorm/moving_mean'],
                               (1 - 0.9997) * conv1.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(moved['resnet_v1_101/block5/conv2/BatchNorm/moving_mean'],
                               (1 - 0.99) * conv2.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(moved['resnet_v1_101/block5/conv2/BatchNorm/moving_variance'],
                               0.99 + (1 - 0.99) * conv2.var(axis=(0, 1, 2)), rtol=1e-5)
    # inference uses the (barely moved) moving statistics, so it differs from the training forward
    assert not np.allclose(model(x, training=False).numpy(), logits_train, atol=1e-3)
