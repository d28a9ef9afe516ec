"""aaf.losses: literal losses vs the original's golden outputs, fused wrappers, adversarial weights, decay and
the loss assembly of train_affinity.py / train_aaf.py."""
import numpy as np
import pytest
import tensorflow as tf

from aaf import losses
from common.models.naming import original_name

SIZES = (1, 2, 3)


def test_affinity_loss_matches_golden(golden, assert_golden):
    ins, outs, case = golden('aaf_affinity_loss')
    tol, scalars = case['tolerance'], case['scalars']
    logits = tf.constant(ins['logits'])
    with tf.GradientTape() as tape:
        tape.watch(logits)
        edge, not_edge = losses.affinity_loss(ins['labels'], tf.nn.softmax(logits), scalars['num_classes'],
                                              scalars['kld_margin'])
        loss = (tf.reduce_mean(edge) * scalars['kld_lambda_1'] + tf.reduce_mean(not_edge) * scalars['kld_lambda_2'])
    assert_golden(edge, outs['edge_loss'], tol['out_edge_loss'])
    assert_golden(not_edge, outs['not_edge_loss'], tol['out_not_edge_loss'])
    assert_golden(tf.reduce_mean(edge), outs['edge_mean'], tol['out_edge_mean'])
    assert_golden(tf.reduce_mean(not_edge), outs['not_edge_mean'], tol['out_not_edge_mean'])
    assert_golden(np.int32(edge.shape[0]), outs['edge_count'], tol['out_edge_count'])
    assert_golden(np.int32(not_edge.shape[0]), outs['not_edge_count'], tol['out_not_edge_count'])
    assert_golden(loss, outs['loss'], tol['out_loss'])
    assert_golden(tape.gradient(loss, logits), outs['grad_logits'], tol['out_grad_logits'])


def test_adaptive_affinity_loss_matches_golden(golden, assert_golden):
    ins, outs, case = golden('aaf_adaptive_affinity_loss')
    tol, scalars = case['tolerance'], case['scalars']
    num_classes = scalars['num_classes']
    logits = tf.constant(ins['logits'])
    w_edge_raw, w_not_edge_raw = tf.Variable(ins['w_edge_raw']), tf.Variable(ins['w_not_edge_raw'])
    with tf.GradientTape() as tape:
        tape.watch(logits)
        probs = tf.nn.softmax(logits)
        w_edge = losses.size_softmax(w_edge_raw, num_classes)
        w_not_edge = losses.size_softmax(w_not_edge_raw, num_classes)
        total = 0.0
        for index, size in enumerate(SIZES):
            np.testing.assert_allclose(tf.reshape(w_edge[:, index], [1, 1, 1, num_classes, 1]),
                                       ins[f'w_edge_s{size}'], rtol=1e-6, atol=1e-7)
            edge, not_edge = losses.adaptive_affinity_loss(
                ins['labels'], ins['one_hot'], probs, size, num_classes, scalars['kld_margin'],
                tf.reshape(w_edge[:, index], [1, 1, 1, num_classes, 1]),
                tf.reshape(w_not_edge[:, index], [1, 1, 1, num_classes, 1]))
            assert_golden(edge, outs[f'edge_loss_s{size}'], tol[f'out_edge_loss_s{size}'])
            assert_golden(not_edge, outs[f'not_edge_loss_s{size}'], tol[f'out_not_edge_loss_s{size}'])
            assert_golden(tf.reduce_mean(edge), outs[f'edge_mean_s{size}'], tol[f'out_edge_mean_s{size}'])
            assert_golden(tf.reduce_mean(not_edge), outs[f'not_edge_mean_s{size}'],
                          tol[f'out_not_edge_mean_s{size}'])
            assert_golden(np.int32(edge.shape[0]), outs[f'edge_count_s{size}'], tol[f'out_edge_count_s{size}'])
            assert_golden(np.int32(not_edge.shape[0]), outs[f'not_edge_count_s{size}'],
                          tol[f'out_not_edge_count_s{size}'])
            total += tf.reduce_mean(edge) + tf.reduce_mean(not_edge)
    grads = tape.gradient(total, [logits, w_edge_raw, w_not_edge_raw])
    assert_golden(total, outs['aaf_loss'], tol['out_aaf_loss'])
    assert_golden(grads[0], outs['grad_logits'], tol['out_grad_logits'])
    assert_golden(grads[1], outs['grad_w_edge_raw'], tol['out_grad_w_edge_raw'])
    assert_golden(grads[2], outs['grad_w_not_edge_raw'], tol['out_grad_w_not_edge_raw'])


def test_fused_wrappers_match_golden(golden, assert_golden):
    ins, outs, case = golden('aaf_affinity_loss')
    tol = case['tolerance']
    edge, not_edge, counts = losses.affinity_loss_fused(ins['labels'], ins['probs'], 4, 3.0)
    assert_golden(edge, outs['edge_mean'], tol['out_edge_mean'])
    assert_golden(not_edge, outs['not_edge_mean'], tol['out_not_edge_mean'])
    assert [int(c) for c in counts] == [outs['edge_count'], outs['not_edge_count']]

    ins, outs, case = golden('aaf_adaptive_affinity_loss')
    tol = case['tolerance']
    edge, not_edge, edge_count, not_edge_count = losses.adaptive_affinity_loss_fused(
        ins['labels'], ins['probs'], 4, 3.0, ins['w_edge_raw'], ins['w_not_edge_raw'])
    for index, size in enumerate(SIZES):
        assert_golden(edge[index], outs[f'edge_mean_s{size}'], tol[f'out_edge_mean_s{size}'])
        assert_golden(not_edge[index], outs[f'not_edge_mean_s{size}'], tol[f'out_not_edge_mean_s{size}'])
    np.testing.assert_array_equal(edge_count, [outs[f'edge_count_s{s}'] for s in SIZES])
    np.testing.assert_array_equal(not_edge_count, [outs[f'not_edge_count_s{s}'] for s in SIZES])


def test_adaptive_affinity_weights_layer():
    layer = losses.AdaptiveAffinityWeights(4)
    assert tuple(layer.edge_w.shape) == (1, 1, 1, 4, 1, 3) and tuple(layer.nonedge_w.shape) == (1, 1, 1, 4, 1, 3)
    assert not np.any(layer.edge_w.numpy()) and not np.any(layer.nonedge_w.numpy())
    assert [original_name(v) for v in (layer.edge_w, layer.nonedge_w)] == ['edge_w', 'nonedge_w']
    assert all('weights' not in original_name(v) and 'edge' in original_name(v) for v in layer.trainable_variables)
    assert layer.ascent is True and layer.restore is False
    w_edge, w_not_edge = layer()
    np.testing.assert_allclose(w_edge, np.full((4, 3), 1 / 3), rtol=1e-6)
    np.testing.assert_allclose(w_not_edge, np.full((4, 3), 1 / 3), rtol=1e-6)
    layer.edge_w.assign(np.arange(12, dtype=np.float32).reshape(1, 1, 1, 4, 1, 3))
    expected = np.exp(np.arange(12).reshape(4, 3))
    np.testing.assert_allclose(layer()[0], expected / expected.sum(1, keepdims=True), rtol=1e-5)


def test_affinity_decay():
    np.testing.assert_allclose([losses.affinity_decay(s, 100) for s in (0, 50, 100)],
                               [1.0, 10 ** -0.5, 0.1], rtol=1e-6)


@pytest.mark.parametrize('mode', ['affinity', 'aaf'])
def test_loss_terms_fused_equals_literal_and_golden(golden, assert_golden, mode):
    name = 'aaf_affinity_loss' if mode == 'affinity' else 'aaf_adaptive_affinity_loss'
    ins, outs, case = golden(name)
    tol = case['tolerance']
    weights = None
    if mode == 'aaf':
        weights = losses.AdaptiveAffinityWeights(4)
        weights.edge_w.assign(ins['w_edge_raw'])
        weights.nonedge_w.assign(ins['w_not_edge_raw'])
    logits = tf.constant(ins['logits'])
    key = 'aff_loss' if mode == 'affinity' else 'aaf_loss'
    results = {}
    for fused in (True, False):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            stats = {}
            terms = losses.aaf_loss_terms(logits, ins['labels'], 4, step=0, num_steps=10, mode=mode,
                                          weights=weights, fused=fused, stats=stats)
        assert list(terms) == [key]
        sources = [logits] + ([weights.edge_w, weights.nonedge_w] if weights else [])
        results[fused] = (terms[key], tape.gradient(terms[key], sources), stats)
    loss_key = 'out_loss' if mode == 'affinity' else 'out_aaf_loss'
    golden_loss = outs[loss_key[4:]]
    for fused in (True, False):
        loss, grads, stats = results[fused]
        assert_golden(loss, golden_loss, tol[loss_key])
        assert_golden(grads[0], outs['grad_logits'], tol['out_grad_logits'])
        if mode == 'aaf':
            assert_golden(grads[1], outs['grad_w_edge_raw'], tol['out_grad_w_edge_raw'])
            assert_golden(grads[2], outs['grad_w_not_edge_raw'], tol['out_grad_w_not_edge_raw'])
            assert int(stats['edge_count_s3']) == outs['edge_count_s3']
        else:
            assert int(stats['not_edge_count_s1']) == outs['not_edge_count']
    # The decay and the lambdas scale the term.
    scaled = losses.aaf_loss_terms(logits, ins['labels'], 4, step=5, num_steps=10, mode=mode, weights=weights,
                                   kld_lambda_1=2.0, kld_lambda_2=2.0)[key]
    assert_golden(scaled, 2 * 10 ** -0.5 * golden_loss, tol[loss_key])


def test_loss_terms_bad_arguments():
    logits, labels = tf.zeros([1, 4, 4, 3]), tf.zeros([1, 4, 4, 1], tf.uint8)
    with pytest.raises(ValueError, match='mode'):
        losses.aaf_loss_terms(logits, labels, 3, 0, 10, mode='segsort')
    with pytest.raises(ValueError, match='weights'):
        losses.aaf_loss_terms(logits, labels, 3, 0, 10, mode='aaf')
