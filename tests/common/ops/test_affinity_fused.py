"""Fused affinity-field loss (common.ops.affinity_fused): golden parity, equality with the literal vector form
(aaf.losses), clip/hinge gradient edges, empty sets and XLA compilation."""
import numpy as np
import pytest
import tensorflow as tf

from aaf import losses as literal
from common.ops.affinity_fused import affinity_field_loss

KL_TOL = dict(rtol=1e-4, atol=1e-6)
GRAD_TOL = dict(rtol=1e-3, atol=2e-6)


def _fused_with_grads(labels, logits, num_classes, margin, sizes, w_edge_raw=None, w_not_edge_raw=None,
                      jit=False):
    """Fused loss sum(edge_means + not_edge_means) and its gradients w.r.t. logits (and the raw weights)."""
    variables = [tf.Variable(w) for w in (w_edge_raw, w_not_edge_raw) if w is not None]

    def run(logits):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            probs = tf.nn.softmax(logits)
            weights = [literal.size_softmax(v, num_classes) for v in variables] or [None, None]
            edge, not_edge, edge_count, not_edge_count = affinity_field_loss(
                labels, probs, num_classes, margin, sizes=sizes, w_edge=weights[0], w_not_edge=weights[1])
            loss = tf.reduce_sum(edge + not_edge)
        grads = tape.gradient(loss, [logits] + variables)
        return edge, not_edge, edge_count, not_edge_count, loss, grads

    if jit:
        run = tf.function(run, jit_compile=True)
    return run(tf.constant(logits))


def _literal_with_grads(labels, logits, num_classes, margin, sizes, w_edge_raw=None, w_not_edge_raw=None):
    """The literal (gather) form: per-size vectors, means, counts, total loss and gradients."""
    variables = [tf.Variable(w) for w in (w_edge_raw, w_not_edge_raw) if w is not None]
    logits = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        weights = [literal.size_softmax(v, num_classes) for v in variables] or [None, None]
        edges, not_edges = literal.adaptive_affinity_loss_per_size(labels, tf.nn.softmax(logits), num_classes,
                                                                    margin, weights[0], weights[1], sizes)
        loss = tf.add_n([tf.reduce_mean(e) + tf.reduce_mean(ne) for e, ne in zip(edges, not_edges)])
    grads = tape.gradient(loss, [logits] + variables)
    return edges, not_edges, loss, grads


def test_fused_affinity_matches_golden(golden, assert_golden):
    ins, outs, case = golden('aaf_affinity_loss')
    edge, not_edge, edge_count, not_edge_count, loss, grads = _fused_with_grads(
        ins['labels'], ins['logits'], case['scalars']['num_classes'], case['scalars']['kld_margin'], (1,))
    np.testing.assert_allclose(edge[0], outs['edge_mean'], **KL_TOL)
    np.testing.assert_allclose(not_edge[0], outs['not_edge_mean'], **KL_TOL)
    assert int(edge_count[0]) == outs['edge_count'] and int(not_edge_count[0]) == outs['not_edge_count']
    np.testing.assert_allclose(loss, outs['loss'], **KL_TOL)
    assert_golden(grads[0], outs['grad_logits'], case['tolerance']['out_grad_logits'])


def test_fused_adaptive_matches_golden(golden, assert_golden):
    ins, outs, case = golden('aaf_adaptive_affinity_loss')
    tol = case['tolerance']
    edge, not_edge, edge_count, not_edge_count, loss, grads = _fused_with_grads(
        ins['labels'], ins['logits'], case['scalars']['num_classes'], case['scalars']['kld_margin'], (1, 2, 3),
        ins['w_edge_raw'], ins['w_not_edge_raw'])
    for index, size in enumerate((1, 2, 3)):
        np.testing.assert_allclose(edge[index], outs[f'edge_mean_s{size}'], **KL_TOL)
        np.testing.assert_allclose(not_edge[index], outs[f'not_edge_mean_s{size}'], **KL_TOL)
        assert int(edge_count[index]) == outs[f'edge_count_s{size}']
        assert int(not_edge_count[index]) == outs[f'not_edge_count_s{size}']
    np.testing.assert_allclose(loss, outs['aaf_loss'], **KL_TOL)
    assert_golden(grads[0], outs['grad_logits'], tol['out_grad_logits'])
    assert_golden(grads[1], outs['grad_w_edge_raw'], tol['out_grad_w_edge_raw'])
    assert_golden(grads[2], outs['grad_w_not_edge_raw'], tol['out_grad_w_not_edge_raw'])


def _random_case(seed, shape=(2, 9, 11), num_classes=5, saturate=True):
    """Blocky labels with ignored pixels; logits with saturated pixels so the clips are active."""
    rng = np.random.default_rng(seed)
    n, h, w = shape
    labels = np.repeat(np.repeat(rng.integers(0, num_classes, (n, h // 2 + 1, w // 2 + 1)), 2, 1), 2, 2)
    labels = labels[:, :h, :w]
    labels = np.where(rng.random(labels.shape) < 0.1, 255, labels).astype(np.uint8)[..., None]
    logits = rng.normal(size=(n, h, w, num_classes)).astype(np.float32) * 3
    if saturate:  # probabilities exactly 1 / below 1e-4 at some pixels
        logits[:, ::3, ::4] *= 40
    w_edge = rng.normal(size=(1, 1, 1, num_classes, 1, 3)).astype(np.float32)
    w_not_edge = rng.normal(size=(1, 1, 1, num_classes, 1, 3)).astype(np.float32)
    return labels, logits, w_edge, w_not_edge


@pytest.mark.parametrize('margin', [3.0, 0.5])
def test_fused_equals_vector_form_with_weights(margin):
    labels, logits, w_edge, w_not_edge = _random_case(3)
    fused = _fused_with_grads(labels, logits, 5, margin, (1, 2, 3), w_edge, w_not_edge)
    edges, not_edges, loss, grads = _literal_with_grads(labels, logits, 5, margin, (1, 2, 3), w_edge, w_not_edge)
    np.testing.assert_allclose(fused[0], [tf.reduce_mean(e) for e in edges], **KL_TOL)
    np.testing.assert_allclose(fused[1], [tf.reduce_mean(e) for e in not_edges], **KL_TOL)
    np.testing.assert_array_equal(fused[2], [e.shape[0] for e in edges])
    np.testing.assert_array_equal(fused[3], [e.shape[0] for e in not_edges])
    for got, want in zip(fused[5], grads):
        np.testing.assert_allclose(got, want, **GRAD_TOL)


def test_fused_equals_vector_form_unweighted_and_tiny_image():
    # 4 x 4 image: at distance 2 no pair has both p+d and p-d inside, so size 2 has empty sets (0 in the fused
    # op) and the gradient is that of size 1 alone.
    labels, logits, _, _ = _random_case(4, shape=(1, 4, 4), saturate=False)
    fused = _fused_with_grads(labels, logits, 5, 3.0, (1, 2))
    edges, not_edges, _, grads = _literal_with_grads(labels, logits, 5, 3.0, (1,))
    assert edges[0].shape[0] > 0 and not_edges[0].shape[0] > 0
    np.testing.assert_allclose(fused[0][0], tf.reduce_mean(edges[0]), **KL_TOL)
    np.testing.assert_allclose(fused[1][0], tf.reduce_mean(not_edges[0]), **KL_TOL)
    np.testing.assert_array_equal(fused[2], [edges[0].shape[0], 0])
    np.testing.assert_array_equal(fused[3], [not_edges[0].shape[0], 0])
    np.testing.assert_array_equal(fused[0][1:], [0.0])
    np.testing.assert_allclose(fused[5][0], grads[0], **GRAD_TOL)


def test_empty_edge_set_is_zero_in_fused_and_nan_in_reference():
    labels = np.zeros((1, 5, 6, 1), np.uint8)  # one class -> no edges
    labels[0, 0, 0, 0] = 255
    logits = np.random.default_rng(5).normal(size=(1, 5, 6, 3)).astype(np.float32)
    edge, not_edge, edge_count, not_edge_count, loss, grads = _fused_with_grads(labels, logits, 3, 3.0, (1,))
    assert int(edge_count[0]) == 0 and float(edge[0]) == 0.0
    assert np.isfinite(loss) and np.all(np.isfinite(grads[0]))
    edges, not_edges, ref_loss, _ = _literal_with_grads(labels, logits, 3, 3.0, (1,))
    assert edges[0].shape[0] == 0 and np.isnan(ref_loss)
    np.testing.assert_allclose(not_edge[0], tf.reduce_mean(not_edges[0]), **KL_TOL)
    # All pixels ignored: both sets empty, everything 0.
    ignored = np.full_like(labels, 255)
    edge, not_edge, edge_count, not_edge_count, loss, grads = _fused_with_grads(ignored, logits, 3, 3.0, (1, 2))
    assert float(loss) == 0.0 and not np.any(grads[0].numpy())
    np.testing.assert_array_equal(not_edge_count, [0, 0])


def test_xla_compiled_gives_same_numbers():
    labels, logits, w_edge, w_not_edge = _random_case(6)
    eager = _fused_with_grads(labels, logits, 5, 3.0, (1, 2, 3), w_edge, w_not_edge)
    compiled = _fused_with_grads(labels, logits, 5, 3.0, (1, 2, 3), w_edge, w_not_edge, jit=True)
    for index in range(4):
        np.testing.assert_allclose(compiled[index], eager[index], rtol=1e-5, atol=1e-6)
    for got, want in zip(compiled[5], eager[5]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match='sizes'):
        affinity_field_loss(np.zeros((1, 4, 4, 1), np.uint8), np.ones((1, 4, 4, 2), np.float32) / 2, 2, 3.0,
                            sizes=(0,))
    with pytest.raises(ValueError, match='probs'):
        affinity_field_loss(np.zeros((1, 4, 4, 1), np.uint8), np.ones((4, 4, 2), np.float32), 2, 3.0)


def test_unknown_spatial_shape_in_graph_mode_matches_eager():
    labels, logits, w_edge, w_not_edge = _random_case(7, shape=(1, 7, 8))
    probs = tf.nn.softmax(logits)
    spec = [tf.TensorSpec([None, None, None, 1], tf.uint8), tf.TensorSpec([None, None, None, 5], tf.float32)]

    def run(labels, probs):
        with tf.GradientTape() as tape:
            tape.watch(probs)
            out = affinity_field_loss(labels, probs, 5, 3.0, sizes=(1, 2, 3))
            loss = tf.reduce_sum(out[0] + out[1])
        return out, tape.gradient(loss, probs)

    graph_out, graph_grad = tf.function(run, input_signature=spec)(labels, probs)
    eager_out, eager_grad = run(tf.constant(labels), probs)
    for got, want in zip(graph_out, eager_out):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(graph_grad, eager_grad, rtol=1e-5, atol=1e-8)
