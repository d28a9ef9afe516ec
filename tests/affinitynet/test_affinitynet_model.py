import numpy as np
import pytest
import tensorflow as tf

from affinitynet import model as M
from common.models.naming import original_names
from common.weights import torch_convert


def _assign(net, values):
    names = original_names(net.weights)
    for key, value in values.items():
        names[key].assign(value)


def test_affinity_head_golden(golden):
    ins, outs, case = golden('psa_aff_head_6x10', 'psa_a2gnn')
    net = M.AffinityNet(backbone=None)
    _assign(net, {f'{n}.weight': ins[f'w_{n}'] for n in ('f8_3', 'f8_4', 'f8_5', 'f9')})
    d = {'conv4': ins['conv4'], 'conv5': ins['conv5'], 'conv6': ins['conv6']}
    f9, aff = net.head(d)
    np.testing.assert_allclose(f9.numpy(), outs['f9'], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(aff.numpy(), outs['aff'], rtol=1e-4, atol=1e-5)
    _, dense = net.head(d, to_dense=True)
    np.testing.assert_allclose(dense.numpy(), outs['aff_dense'], rtol=1e-4, atol=1e-5)


def _fake_state_dict(network, width_multiplier, seed=0):
    rng = np.random.default_rng(seed)
    shapes = torch_convert.expected_torch_shapes(network, width_multiplier)
    state = {}
    for key, shape in shapes.items():
        value = rng.normal(scale=0.1, size=shape).astype(np.float32)
        if key.endswith('running_var'):
            value = np.abs(value) + 0.5
        state[key] = value
    return state


@pytest.mark.parametrize('arch,kind', [('resnet38', 'cls'), ('resnet38', 'aff'), ('vgg16', 'cls'),
                                       ('vgg16', 'aff')])
def test_released_layouts_load_and_round_trip(tmp_path, arch, kind):
    """A hand-built state dict in the layout of res38_cls/res38_aff/vgg16_cls/vgg16_aff.pth (tiny widths) loads
    strictly, every tensor lands in its variable, and a saved copy reloads to the same outputs."""
    wm = 1 / 16
    network = f'{arch}_{kind}'
    state = _fake_state_dict(network, wm)
    net = M.build_classifier(arch, wm) if kind == 'cls' else M.build_affinity_net(arch, wm)
    path = tmp_path / 'w.npz'
    np.savez(path, **state)
    restored, missing, unexpected = M.load_weights(net, str(path), strict=True)
    assert not missing and not unexpected and len(restored) == len(state)
    exported = torch_convert.export_torch_state_dict(net)
    for key, value in state.items():
        np.testing.assert_array_equal(exported[key].reshape(value.shape), value)
    images = np.random.default_rng(1).normal(size=[1, 96, 96, 3]).astype(np.float32)
    out = net.forward_cam(images) if kind == 'cls' else net(images)
    M.save_weights(net, str(tmp_path / 'copy.npz'))
    other = M.build_classifier(arch, wm) if kind == 'cls' else M.build_affinity_net(arch, wm)
    M.load_weights(other, str(tmp_path / 'copy.npz'), strict=True)
    again = other.forward_cam(images) if kind == 'cls' else other(images)
    np.testing.assert_allclose(again.numpy(), out.numpy(), rtol=1e-5, atol=1e-6)
    if kind == 'cls':
        assert out.shape == (1, 12, 12, 20)
        if arch == 'vgg16':  # sqrt of a ReLU'd map
            assert np.all(out.numpy() >= 0)
    else:
        assert out.shape == (1, 34, (12 - 4) * (12 - 8))


def test_weights_of_wrong_shape_are_named(tmp_path):
    state = _fake_state_dict('resnet38_cls', 1 / 16)
    state['fc8.weight'] = np.zeros([20, 7, 1, 1], np.float32)
    np.savez(tmp_path / 'bad.npz', **state)
    net = M.build_classifier('resnet38', 1 / 16)
    with pytest.raises(ValueError, match=r'bad.npz.*fc8.weight'):
        M.load_weights(net, str(tmp_path / 'bad.npz'))
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        M.load_weights(net, str(tmp_path / 'missing.pth'))


def test_classifier_logits_are_gap_of_cam_preactivation():
    net = M.build_classifier('resnet38', 1 / 16)
    images = np.random.default_rng(2).normal(size=[2, 32, 40, 3]).astype(np.float32)
    logits = net(images, training=False).numpy()
    pre = net.fc8(net.features(images)).numpy()
    np.testing.assert_allclose(logits, pre.mean(axis=(1, 2)), rtol=1e-4, atol=1e-5)


def test_parameter_groups_match_original():
    from common.train.optimizers import assign_groups, psa_parameter_groups
    from common.models.naming import original_name
    net = M.build_affinity_net('vgg16', 1 / 16)
    groups = assign_groups(net.trainable_variables, psa_parameter_groups(M.AFF_SCRATCH, 5e-4))
    by_name = {original_name(v): g.name for v, g in zip(net.trainable_variables, groups)}
    assert by_name['f9.weight'] == 'scratch_weight' and by_name['gn8_3.weight'] == 'backbone_weight'
    assert by_name['gn8_3.bias'] == 'backbone_bias' and by_name['fc7.bias'] == 'backbone_bias'
    assert 'conv1_1.weight' not in by_name  # frozen as the original's not_training
