import numpy as np
import pytest
import tensorflow as tf

from a2gnn.gated_crf import create_kernels, gated_crf_loss, gated_crf_regularizer


def test_regularizer_matches_golden(a2g, check_output):
    ins, outs, case = a2g('a2g_gatedcrf_regularizer_r4')
    args = case['args']
    aff_dis = tf.constant(ins['aff_dis'])
    with tf.GradientTape() as tape:
        tape.watch(aff_dis)
        loss = gated_crf_regularizer(aff_dis, args['kernels_desc'], args['radius'], {'rgb': ins['rgb']},
                                     args['height_input'], args['width_input'], mask_src=ins['mask_src'])['loss']
    check_output(case, outs, 'loss', loss)
    check_output(case, outs, 'grad_aff_dis', tape.gradient(loss, aff_dis))
    n, h, w = ins['aff_dis'].shape[:3]
    check_output(case, outs, 'kernels', create_kernels(args['kernels_desc'], args['radius'], {'rgb': ins['rgb']},
                                                       n, h, w))


@pytest.mark.parametrize('name', ['a2g_gatedcrf_potts_nomask', 'a2g_gatedcrf_potts_masks'])
def test_potts_loss_matches_golden(a2g, check_output, name):
    ins, outs, case = a2g(name)
    args = case['args']
    masks = {k: ins[k] for k in ('mask_src', 'mask_dst') if k in ins}
    y = tf.constant(ins['y'])
    with tf.GradientTape() as tape:
        tape.watch(y)
        loss = gated_crf_loss(y, args['kernels_desc'], args['radius'], {'rgb': ins['rgb']}, args['height_input'],
                              args['width_input'], **masks)['loss']
    check_output(case, outs, 'loss', loss)
    check_output(case, outs, 'grad_y', tape.gradient(loss, y))
    n, h, w = ins['y'].shape[:3]
    check_output(case, outs, 'kernels', create_kernels(args['kernels_desc'], args['radius'], {'rgb': ins['rgb']},
                                                       n, h, w))


def test_potts_loss_with_compatibility_matches_potts_for_uniform_matrix():
    """A uniform off-diagonal compatibility is the Potts model up to the constant sum(K) (C-1 normalisation)."""
    rng = np.random.default_rng(0)
    y = tf.nn.softmax(rng.normal(size=(1, 6, 8, 4)).astype(np.float32))
    rgb = rng.normal(size=(1, 6, 8, 3)).astype(np.float32)
    desc = [{'weight': 1, 'xy': 6, 'rgb': 0.1}]
    potts = gated_crf_loss(y, desc, 2, {'rgb': rgb}, 6, 8)['loss']
    compat = 1 - np.eye(4, dtype=np.float32)
    general = gated_crf_loss(y, desc, 2, {'rgb': rgb}, 6, 8, compatibility=compat)['loss']
    # sum_c y_c sum_c' (K y_c') = sum K  (probabilities sum to 1), so both forms agree.
    np.testing.assert_allclose(general.numpy(), potts.numpy(), rtol=1e-4, atol=1e-5)


def test_potts_loss_rejects_size_mismatch():
    with pytest.raises(ValueError, match='whole multiple'):
        gated_crf_loss(np.ones((1, 4, 4, 2), np.float32) / 2, [{'weight': 1, 'xy': 6}], 1, {}, 6, 6)


def test_window_matrix_potts_loss_equals_the_unfolded_form_with_masks_and_batch():
    """The sparse window-matrix product (values and gradients) against the original's unfolded formulation, for a
    batch of 2 with source and destination masks (kernels not symmetric) and a radius larger than the image."""
    from a2gnn.gated_crf import potts_loss, potts_loss_unfolded, window_matrix
    rng = np.random.default_rng(3)
    y = tf.constant(tf.nn.softmax(rng.normal(size=(2, 5, 7, 4)).astype(np.float32)))
    rgb = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
    for radius in (2, 6):
        kernels = create_kernels([{'weight': 1, 'xy': 6, 'rgb': 0.5}], radius, {'rgb': rgb}, 2, 5, 7)
        mask, mask_dst = ((rng.uniform(size=(2, 5, 7, 1)) > 0.3).astype(np.float32) for _ in range(2))
        kernels = kernels * tf.image.extract_patches(mask, [1, 2 * radius + 1, 2 * radius + 1, 1], [1, 1, 1, 1],
                                                     [1, 1, 1, 1], 'SAME')[:, :, :, None].numpy().reshape(
            2, 5, 7, 1, 2 * radius + 1, 2 * radius + 1) * mask_dst[..., None, None]
        values, grads = [], []
        for form in (lambda y: potts_loss(y, window_matrix(kernels), tf.reduce_sum(kernels), 70.0),
                     lambda y: potts_loss_unfolded(y, kernels, 70.0)):
            with tf.GradientTape() as tape:
                tape.watch(y)
                loss = form(y)
            values.append(loss.numpy())
            grads.append(tape.gradient(loss, y).numpy())
        np.testing.assert_allclose(values[0], values[1], rtol=1e-5)
        np.testing.assert_allclose(grads[0], grads[1], rtol=1e-5, atol=1e-7)
