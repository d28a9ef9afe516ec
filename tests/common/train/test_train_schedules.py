"""Poly LR (AAF and PSA forms) and the AAF affinity decay vs NumPy."""
import numpy as np
import pytest
import tensorflow as tf

from common.train.schedules import affinity_decay, poly_lr


def test_poly_lr_aaf_form():
    steps = np.arange(0, 11)
    got = [poly_lr(2.5e-4, int(s), 11, 0.9) for s in steps]
    np.testing.assert_allclose(got, 2.5e-4 * (1 - steps / 11.0) ** 0.9, rtol=1e-12)
    assert got[0] == 2.5e-4 and got[-1] > 0  # num_steps = N+1 keeps the last LR positive


def test_poly_lr_tensor_step_and_psa_freeze():
    np.testing.assert_allclose(poly_lr(0.1, tf.constant(3.0), 10, 0.9).numpy(), 0.1 * 0.7 ** 0.9, rtol=1e-6)
    last = 0.1 * (1 - 9 / 10) ** 0.9
    assert poly_lr(0.1, 15, 10, 0.9, freeze_after_end=True) == pytest.approx(last)
    np.testing.assert_allclose(poly_lr(0.1, tf.constant(15), 10, 0.9, freeze_after_end=True).numpy(), last,
                               rtol=1e-6)
    assert poly_lr(0.1, 4, 10, 0.9, freeze_after_end=True) == pytest.approx(0.1 * 0.6 ** 0.9)
    with pytest.raises(ValueError, match='num_steps'):
        poly_lr(0.1, 0, 0)


def test_affinity_decay():
    assert affinity_decay(0, 100) == 1.0
    assert affinity_decay(100, 100) == pytest.approx(0.1)
    np.testing.assert_allclose(affinity_decay(tf.constant(50.0), 100).numpy(), 10 ** -0.5, rtol=1e-6)
