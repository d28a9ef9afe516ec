import numpy as np
import tensorflow as tf

from affinitynet.losses import affinity_loss


def test_affinity_loss_and_gradient_golden(golden):
    ins, outs, case = golden('psa_affinity_loss', 'psa_a2gnn')
    aff = tf.Variable(ins['aff'])
    with tf.GradientTape() as tape:
        result = affinity_loss(aff, ins['bg'], ins['fg'], ins['neg'])
    grad = tape.gradient(result['loss'], aff)
    for key in ('loss', 'bg_loss', 'fg_loss', 'neg_loss', 'bg_count', 'fg_count', 'neg_count'):
        np.testing.assert_allclose(float(result[key]), outs[key], rtol=1e-5, atol=1e-5, err_msg=key)
    np.testing.assert_allclose(grad.numpy(), outs['grad_aff'], rtol=1e-4, atol=1e-6)


def test_empty_masks_give_zero_terms():
    aff = np.full([1, 2, 3], 0.5, np.float32)
    zeros = np.zeros_like(aff)
    result = affinity_loss(aff, zeros, zeros, np.ones_like(aff))
    assert float(result['bg_loss']) == 0 and float(result['fg_loss']) == 0
    np.testing.assert_allclose(float(result['loss']), -np.log(0.5 + 1e-5) / 2 * 6 / (6 + 1e-5), rtol=1e-5)
