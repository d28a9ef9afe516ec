"""Optimizers vs independent NumPy implementations of the originals' update rules (several steps, changing LR)."""
import numpy as np
import pytest
import tensorflow as tf

from common.models.naming import set_original_name
from common.train.optimizers import (TF1Momentum, TorchAdam, TorchSGD, VariableGroup, aaf_variable_groups,
                                     poly_optimizer, psa_parameter_groups)
from common.train.schedules import poly_lr
from common.train.strategy import make_strategy

SHAPES = {'resnet_v1_101/conv1/weights': (3, 2), 'resnet_v1_101/block5/fc1_voc12/weights': (2, 2),
          'resnet_v1_101/block5/fc1_voc12/biases': (2,), 'edge_w': (1, 3)}


def _variables(names, seed=0):
    rng = np.random.RandomState(seed)
    out = []
    for name in names:
        v = tf.Variable(rng.randn(*SHAPES[name]).astype(np.float32))
        set_original_name(v, name)
        out.append(v)
    return out


def _grads(step, variables, seed=100):
    rng = np.random.RandomState(seed + step)
    return [rng.randn(*v.shape).astype(np.float32) for v in variables]


def _run(optimizer, variables, lrs):
    optimizer.build(variables)
    for step, lr in enumerate(lrs):
        optimizer.apply_gradients(zip([tf.constant(g) for g in _grads(step, variables)], variables), lr)
    return [v.numpy() for v in variables]


def test_tf1_momentum_matches_numpy_with_groups_and_ascent():
    names = list(SHAPES)
    variables = _variables(names)
    edge = variables[-1]
    w = [v.numpy().astype(np.float64) for v in variables]
    lrs = [poly_lr(0.01, s, 5, 0.9) for s in range(5)]
    got = _run(TF1Momentum(0.9, groups=aaf_variable_groups([edge])), variables, lrs)
    # Reference: acc = m*acc + g; w -= lr*acc; block5 x10; edge: negated gradient.
    mult = [1.0, 10.0, 10.0, 1.0]
    sign = [1.0, 1.0, 1.0, -1.0]
    acc = [np.zeros_like(x) for x in w]
    for step, lr in enumerate(lrs):
        for i, g in enumerate(_grads(step, variables)):
            acc[i] = 0.9 * acc[i] + sign[i] * g
            w[i] = w[i] - lr * mult[i] * acc[i]
    for a, b in zip(got, w):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_tf1_momentum_differs_from_keras_sgd_under_changing_lr():
    """Q-A19: the rule must not be Keras' v = m*v - lr*g (identical only for a constant LR)."""
    import keras
    (v1,) = _variables(['edge_w'])
    v2 = tf.Variable(v1.numpy())
    lrs = [0.1, 0.05, 0.01]
    got = _run(TF1Momentum(0.9), [v1], lrs)[0]
    sgd = keras.optimizers.SGD(learning_rate=0.1, momentum=0.9)
    for step, lr in enumerate(lrs):
        sgd.learning_rate = lr
        sgd.apply_gradients([(tf.constant(_grads(step, [v2])[0]), v2)])
    assert np.abs(got - v2.numpy()).max() > 1e-3


def _torch_sgd_reference(w, grads_per_step, lrs, momentum, wds, mults):
    """torch.optim.SGD.step (dampening 0, nesterov False) written from its documented algorithm."""
    bufs = [None] * len(w)
    for step, lr in enumerate(lrs):
        for i, g in enumerate(grads_per_step(step)):
            d_p = g + wds[i] * w[i]
            if momentum != 0:
                bufs[i] = d_p.copy() if bufs[i] is None else momentum * bufs[i] + d_p
                d_p = bufs[i]
            w[i] = w[i] - lr * mults[i] * d_p
    return w


@pytest.mark.parametrize('intended', [False, True])
def test_psa_poly_optimizer_matches_torch_sgd(intended):
    names = ['conv1a.weight', 'conv1a.bias', 'fc8.weight', 'fc8.bias']
    shapes = [(3, 2), (2,), (2, 4), (4,)]
    rng = np.random.RandomState(1)
    variables = []
    for name, shape in zip(names, shapes):
        v = tf.Variable(rng.randn(*shape).astype(np.float32))
        set_original_name(v, name)
        variables.append(v)
    w = [v.numpy().astype(np.float64) for v in variables]
    max_step = 4
    lrs = [poly_lr(0.1, s, max_step, 0.9, freeze_after_end=True) for s in range(6)]  # 2 steps past the end
    assert lrs[4] == lrs[5] == lrs[3]
    opt = poly_optimizer(5e-4, from_scratch_prefixes=('fc8',), intended_momentum=intended)
    assert opt.momentum == (0.9 if intended else 5e-4)
    got = _run(opt, variables, lrs)
    ref = _torch_sgd_reference(w, lambda s: _grads(s, variables), lrs, 0.9 if intended else 5e-4,
                               wds=[5e-4, 0.0, 5e-4, 0.0], mults=[1.0, 2.0, 10.0, 20.0])
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_psa_groups_assignment():
    groups = psa_parameter_groups(('f8_3', 'f9'), 5e-4)
    names = {'f9.weight': ('scratch_weight', 10.0, 5e-4), 'f8_3.bias': ('scratch_bias', 20.0, 0.0),
             'conv1a.weight': ('backbone_weight', 1.0, 5e-4), 'gn1.bias': ('backbone_bias', 2.0, 0.0)}
    for name, (group, mult, wd) in names.items():
        (v,) = [tf.Variable([1.0])]
        set_original_name(v, name)
        match = next(g for g in groups if g.matches(v))
        assert (match.name, match.lr_mult, match.weight_decay) == (group, mult, wd)


def test_torch_adam_matches_numpy():
    variables = _variables(['resnet_v1_101/conv1/weights', 'edge_w'], seed=3)
    w = [v.numpy().astype(np.float64) for v in variables]
    lrs = [0.035, 0.02, 0.01, 0.005]
    got = _run(TorchAdam(weight_decay=5e-4, groups=[VariableGroup('e', contains='edge', lr_mult=2.0)]),
               variables, lrs)
    m = [np.zeros_like(x) for x in w]
    v = [np.zeros_like(x) for x in w]
    mults = [1.0, 2.0]
    for step, lr in enumerate(lrs):
        t = step + 1
        for i, g in enumerate(_grads(step, variables)):
            g = g + 5e-4 * w[i]
            m[i] = 0.9 * m[i] + 0.1 * g
            v[i] = 0.999 * v[i] + 0.001 * g * g
            denom = np.sqrt(v[i]) / np.sqrt(1 - 0.999 ** t) + 1e-8
            w[i] = w[i] - lr * mults[i] / (1 - 0.9 ** t) * m[i] / denom
    for a, b in zip(got, w):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_mirrored_apply_sums_replica_gradients():
    strategy = make_strategy(devices=['/cpu:0', '/cpu:1'])
    with strategy.scope():
        v = tf.Variable(np.ones((2,), np.float32))
        set_original_name(v, 'x/weights')
        opt = TF1Momentum(0.9)
        opt.build([v])

    @tf.function
    def step(lr):
        def replica_fn():
            rid = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.float32)
            opt.apply_gradients([(tf.stack([1.0 + rid, 2.0 * rid]), v)], lr)
        strategy.run(replica_fn)

    step(tf.constant(0.1))
    step(tf.constant(0.05))
    g = np.array([3.0, 2.0])  # replica 0 [1, 0] + replica 1 [2, 2]
    acc1 = g
    acc2 = 0.9 * acc1 + g
    expected = 1.0 - 0.1 * acc1 - 0.05 * acc2
    for local in strategy.experimental_local_results(v):
        np.testing.assert_allclose(local.numpy(), expected, rtol=1e-6)
    assert int(opt.iterations.numpy()) == 2


def test_slots_and_iterations_checkpoint_roundtrip(tmp_path):
    names = ['resnet_v1_101/conv1/weights', 'resnet_v1_101/block5/fc1_voc12/weights']
    lrs = [0.1, 0.08, 0.05]
    reference = _run(TF1Momentum(0.9, groups=aaf_variable_groups()), _variables(names), lrs)

    variables = _variables(names)
    opt = TF1Momentum(0.9, groups=aaf_variable_groups())
    opt.build(variables)
    for step in range(2):
        opt.apply_gradients(zip(map(tf.constant, _grads(step, variables)), variables), lrs[step])
    path = tf.train.Checkpoint(optimizer=opt, v0=variables[0], v1=variables[1]).save(str(tmp_path / 'ck'))
    assert any('optimizer/slots/' in k for k, _ in tf.train.list_variables(path))

    fresh = _variables(names, seed=9)
    opt2 = TF1Momentum(0.9, groups=aaf_variable_groups())
    opt2.build(fresh)
    tf.train.Checkpoint(optimizer=opt2, v0=fresh[0], v1=fresh[1]).restore(path).assert_consumed()
    assert int(opt2.iterations.numpy()) == 2
    opt2.apply_gradients(zip(map(tf.constant, _grads(2, fresh)), fresh), lrs[2])
    for a, b in zip([v.numpy() for v in fresh], reference):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_unknown_variable_and_unbuilt_errors():
    (v,) = _variables(['edge_w'])
    opt = TorchSGD(0.9)
    with pytest.raises(RuntimeError, match='build'):
        opt.apply_gradients([(tf.ones([1, 3]), v)], 0.1)
    opt.build([v])
    (other,) = _variables(['edge_w'])
    with pytest.raises(ValueError, match='not passed to build'):
        opt.apply_gradients([(tf.ones([1, 3]), other)], 0.1)
