import shutil

import numpy as np
import pytest
import tensorflow as tf

from a2gnn.affinity import gated_affinity
from a2gnn.losses import box_mil_loss, box_mp_loss, gated_affinity_loss, split_ce_from_nodes, split_ce_loss

LOSS_KEYS = ('loss', 'bg_loss', 'fg_loss', 'neg_loss', 'crf_loss', 'bg_count', 'fg_count', 'neg_count',
             'bg_pos_label_need', 'fg_pos_label_need', 'neg_label_need', 'crf_mask', 'crf_img')


@pytest.mark.parametrize('name', ['a2g_gated_aff_loss_r3', 'a2g_gated_aff_loss_r4'])
def test_gated_affinity_loss_matches_golden(a2g, check_output, name):
    ins, outs, case = a2g(name)
    radius = case['args']['radius']
    f9 = tf.constant(ins['f9'])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(f9)
        aff, aff_crf = gated_affinity(f9, radius)
        tape.watch([aff, aff_crf])
        result = gated_affinity_loss(aff, aff_crf, ins['label'], ins['croppings'], ins['img'], radius)
    check_output(case, outs, 'aff', aff)
    check_output(case, outs, 'aff_crf', aff_crf)
    for key in LOSS_KEYS:
        check_output(case, outs, key, result[key])
    grad_f9, grad_aff, grad_aff_crf = tape.gradient(result['loss'], [f9, aff, aff_crf])
    check_output(case, outs, 'grad_f9', grad_f9)
    check_output(case, outs, 'grad_aff', grad_aff)
    check_output(case, outs, 'grad_aff_crf_total', grad_aff_crf)


def test_box_mp_loss_matches_golden(a2g, check_output):
    ins, outs, case = a2g('a2g_box_mp_loss')
    pred, fts = tf.constant(ins['pred']), tf.constant(ins['fts'])
    with tf.GradientTape() as tape:
        tape.watch([pred, fts])
        loss, seed = box_mp_loss(pred, fts, ins['boxes'], ins['box_class'], ins['seed'])
    check_output(case, outs, 'loss', loss)
    check_output(case, outs, 'seed', seed)
    grad_pred, grad_fts = tape.gradient(loss, [pred, fts])
    check_output(case, outs, 'grad_pred', grad_pred)
    check_output(case, outs, 'grad_fts', grad_fts)


def test_box_mp_loss_edits_seed_where_features_oppose_the_prototype():
    """The consistency check (a no-op for non-negative features) sets class pixels with a negative cosine to the
    prototype to 255, inside the box only, and leaves other classes alone."""
    pred = np.zeros((1, 6, 6, 21), np.float32)
    pred[0, 1:4, 1:4, 7] = 5.0
    fts = np.ones((1, 6, 6, 4), np.float32)
    fts[0, 3, 3] = -1.0  # opposes the prototype, inside the box
    fts[0, 5, 5] = -1.0  # outside the box
    seed = np.full((1, 6, 6), 7, np.int64)
    seed[0, 2, 3] = 0
    fts[0, 2, 3] = -1.0  # background pixel: kept
    _, seed_after = box_mp_loss(pred, fts, [[1, 1, 3, 3]], ['car'], seed)
    expected = seed.copy()
    expected[0, 3, 3] = 255
    np.testing.assert_array_equal(seed_after.numpy(), expected)


def test_box_mil_loss_matches_golden(a2g, check_output):
    ins, outs, case = a2g('a2g_box_mil_loss')
    pred = tf.constant(ins['pred'])
    with tf.GradientTape() as tape:
        tape.watch(pred)
        loss = box_mil_loss(pred, ins['boxes'], ins['box_class'])
    check_output(case, outs, 'loss', loss)
    check_output(case, outs, 'grad_pred', tape.gradient(loss, pred))


def test_split_ce_loss_matches_golden(a2g, check_output):
    ins, outs, case = a2g('a2g_train_with_nocrf')
    x = tf.constant(ins['x'])
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss, bg_loss, fg_loss, pred = split_ce_loss(x, ins['seed'], case['args']['f_h'], case['args']['f_w'])
    for key, value in (('loss', loss), ('bg_loss', bg_loss), ('fg_loss', fg_loss), ('pred', pred)):
        check_output(case, outs, key, value)
    check_output(case, outs, 'grad_x', tape.gradient(loss, x))


NEEDS_GXX = pytest.mark.skipif(shutil.which('g++') is None, reason='the compiled kernel is built with g++')


@pytest.mark.parametrize('chunk_rows, impl', [(56, 'tf'), (15, 'tf'), (1, 'tf'),
                                              pytest.param(56, 'kernel', marks=NEEDS_GXX)])
def test_chunked_split_ce_matches_golden(a2g, check_output, chunk_rows, impl):
    # The trainer's chunked form (prediction never whole; gradient by recomputed chunks), one and several chunks
    # (56 seed rows): the golden losses and gradient; with weighted upstreams (CRF-free mix of both terms).
    ins, outs, case = a2g('a2g_train_with_nocrf')
    x = tf.constant(ins['x'])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        bg_loss, fg_loss = split_ce_from_nodes(x, ins['seed'], case['args']['f_h'], case['args']['f_w'],
                                               chunk_rows=chunk_rows, impl=impl)
        loss = bg_loss + fg_loss
        mixed = 0.3 * bg_loss - 2.0 * fg_loss
    for key, value in (('loss', loss), ('bg_loss', bg_loss), ('fg_loss', fg_loss)):
        check_output(case, outs, key, value)
    check_output(case, outs, 'grad_x', tape.gradient(loss, x))
    with tf.GradientTape() as reference_tape:
        reference_tape.watch(x)
        _, ref_bg, ref_fg, _ = split_ce_loss(x, ins['seed'], case['args']['f_h'], case['args']['f_w'])
        ref_mixed = 0.3 * ref_bg - 2.0 * ref_fg
    np.testing.assert_allclose(tape.gradient(mixed, x).numpy(), reference_tape.gradient(ref_mixed, x).numpy(),
                               rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize('impl', ['tf', pytest.param('kernel', marks=NEEDS_GXX)])
@pytest.mark.parametrize('fill', [0, 7, 255])
def test_split_ce_loss_skips_an_empty_term(fill, impl):
    """A seed without background (or foreground, or any label) gets a finite loss: the empty term is 0 (the
    original divides by 0 and returns NaN)."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(6, 21)).astype(np.float32))
    seed = np.full((1, 16, 24), fill, np.int64)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        loss, bg_loss, fg_loss, _ = split_ce_loss(x, seed, 2, 3)
        chunked_bg, chunked_fg = split_ce_from_nodes(x, seed, 2, 3, chunk_rows=5, impl=impl)
        chunked_loss = chunked_bg + chunked_fg
    grad = tape.gradient(loss, x).numpy()
    np.testing.assert_allclose([chunked_bg.numpy(), chunked_fg.numpy()], [bg_loss.numpy(), fg_loss.numpy()],
                               rtol=1e-6)
    assert np.isfinite(loss.numpy()) and np.all(np.isfinite(grad))
    assert (bg_loss.numpy() == 0) == (fill != 0)
    assert (fg_loss.numpy() == 0) == (fill in (0, 255))
    chunked_grad = tape.gradient(chunked_loss, x).numpy()
    np.testing.assert_allclose(chunked_grad, grad, rtol=1e-5, atol=1e-8)
    if fill == 255:
        assert loss.numpy() == 0 and not grad.any() and not chunked_grad.any()
