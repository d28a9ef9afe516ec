"""The AAF L2 rule: weight_decay * sum(v^2)/2 over variables whose original name contains 'weights'."""
import numpy as np
import tensorflow as tf

from common.models.naming import set_original_name
from common.train.regularizers import l2_loss, l2_variables


def _var(name, value):
    v = tf.Variable(np.asarray(value, np.float32))
    set_original_name(v, name)
    return v


def test_l2_selects_kernels_only():
    rng = np.random.RandomState(0)
    values = {'resnet_v1_101/conv1/weights': rng.randn(3, 3, 3, 4), 'resnet_v1_101/conv1/biases': rng.randn(4),
              'resnet_v1_101/conv1/BatchNorm/gamma': rng.randn(4), 'resnet_v1_101/block5/fc1_voc12/weights':
              rng.randn(1, 1, 4, 21), 'edge_w': rng.randn(1, 1, 1, 21, 1, 3)}
    variables = [_var(k, v) for k, v in values.items()]
    assert len(l2_variables(variables)) == 2
    expected = 5e-4 * sum((values[k].astype(np.float32) ** 2).sum() / 2 for k in values if 'weights' in k)
    np.testing.assert_allclose(l2_loss(variables, 5e-4).numpy(), expected, rtol=1e-6)
    # A custom substring filter and the empty case.
    np.testing.assert_allclose(l2_loss(variables, 1.0, name_filter='gamma').numpy(),
                               (values['resnet_v1_101/conv1/BatchNorm/gamma'] ** 2).sum() / 2, rtol=1e-5)
    assert float(l2_loss(variables[1:2], 5e-4)) == 0.0
