"""Compiled affinity-field kernel (common.ops.affinity_kernel): equal to the XLA op and the literal reference
(values rtol 1e-5, gradients rtol 1e-4) on the golden cases and random shapes, gradients through the engine's
GradientTape, the 'auto' choice, and the fallback when the build fails.

The kernel is compiled once per machine into the cache (~/.cache/affinity-seg, or $AFFINITY_SEG_CACHE); the
first test session on a fresh machine pays ~15-40 s of g++."""
import logging
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from aaf import losses as literal
from common.ops import affinity_kernel
from common.ops.affinity_fused import affinity_field_loss, resolve_impl

VALUE_TOL = dict(rtol=1e-5, atol=1e-7)
GRAD_RTOL = 1e-4

pytestmark = pytest.mark.skipif(shutil.which('g++') is None, reason='the kernel is built with g++')


@pytest.fixture(scope='module', autouse=True)
def kernel():
    """Builds (or finds in the cache) and loads the kernel once for the module."""
    affinity_kernel._reset_for_tests()
    module = affinity_kernel.load_kernel(raise_errors=True)
    yield module
    affinity_kernel._reset_for_tests()


def _assert_grad_close(actual, expected):
    expected = np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=GRAD_RTOL, atol=1e-6 * max(np.abs(expected).max(), 1e-3))


def _assert_logits_grad_close(actual, expected):
    """d/d logits through the kernel's own softmax (from_logits) vs the XLA op's through TensorFlow's. Both form
    1 - P in float, which near P = 1 magnifies the ulp-level differences of the two softmaxes by 1 / (1 - P)
    (seen: 1.6e-4 relative at P = 0.9996). The exact gradient sums to 0 over a pixel's channels, so the reference's
    own error at a pixel is at least |sum_c expected| / C; that sum is allowed on top of the usual tolerance."""
    expected = np.asarray(expected)
    slack = np.abs(expected.sum(-1, keepdims=True))
    allowed = GRAD_RTOL * np.abs(expected) + 1e-6 * max(np.abs(expected).max(), 1e-3) + slack
    excess = np.abs(np.asarray(actual) - expected) - allowed
    worst = np.unravel_index(excess.argmax(), excess.shape)
    assert np.all(excess <= 0), f'{np.sum(excess > 0)} elements off, worst at {worst} by {excess.max():.3g}'


def _loss_and_grads(impl, labels, logits, num_classes, margin, sizes, w_edge_raw=None, w_not_edge_raw=None,
                    via_logits=False):
    """affinity_field_loss outputs, a weighted total and its gradients w.r.t. logits and the raw weights
    (via_logits: the logits are passed too, so the kernel takes their softmax and its Jacobian itself)."""
    variables = [tf.Variable(w) for w in (w_edge_raw, w_not_edge_raw) if w is not None]
    logits = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        probs = tf.nn.softmax(logits)
        weights = [literal.size_softmax(v, num_classes) for v in variables] or [None, None]
        out = affinity_field_loss(labels, probs, num_classes, margin, sizes=sizes, w_edge=weights[0],
                                  w_not_edge=weights[1], impl=impl, logits=logits if via_logits else None)
        # Different factors per term, so a mix-up of edge / non-edge or sizes shows in the gradient.
        total = tf.reduce_sum(out[0] * 1.7 + out[1] * tf.range(1.0, len(sizes) + 1.0))
    return [np.asarray(v) for v in out], total, tape.gradient(total, [logits] + variables)


def _literal_means(labels, logits, num_classes, margin, sizes, w_edge_raw=None, w_not_edge_raw=None):
    """The literal (gather) form's per-size means, counts and the same weighted total's gradients."""
    variables = [tf.Variable(w) for w in (w_edge_raw, w_not_edge_raw) if w is not None]
    logits = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        weights = [literal.size_softmax(v, num_classes) for v in variables] or [None, None]
        edge_losses, not_edge_losses = literal.adaptive_affinity_loss_per_size(
            labels, tf.nn.softmax(logits), num_classes, margin, weights[0], weights[1], sizes)
        edges = [tf.reduce_mean(e) for e in edge_losses]
        not_edges = [tf.reduce_mean(ne) for ne in not_edge_losses]
        total = tf.reduce_sum(tf.stack(edges) * 1.7 + tf.stack(not_edges) * tf.range(1.0, len(sizes) + 1.0))
    counts = [(e.shape[0], ne.shape[0]) for e, ne in zip(edge_losses, not_edge_losses)]
    return np.asarray(edges), np.asarray(not_edges), counts, tape.gradient(total, [logits] + variables)


def _random_case(seed, shape, num_classes, ignore=0.1, block=2, saturate=True):
    """Blocky labels with ignored pixels; logits with saturated pixels so the clips are active."""
    rng = np.random.default_rng(seed)
    n, h, w = shape
    labels = rng.integers(0, num_classes, (n, h // block + 1, w // block + 1))
    labels = np.repeat(np.repeat(labels, block, 1), block, 2)[:, :h, :w]
    labels = np.where(rng.random(labels.shape) < ignore, 255, labels).astype(np.uint8)[..., None]
    logits = rng.normal(size=(n, h, w, num_classes)).astype(np.float32) * 3
    if saturate:  # probabilities exactly 1 / below 1e-4 at some pixels
        logits[:, ::3, ::4] *= 40
    w_edge = rng.normal(size=(1, 1, 1, num_classes, 1, 3)).astype(np.float32)
    w_not_edge = rng.normal(size=(1, 1, 1, num_classes, 1, 3)).astype(np.float32)
    return labels, logits, w_edge, w_not_edge


def _assert_kernel_equals_xla(labels, logits, num_classes, margin, sizes, *weights):
    """The kernel (on TensorFlow's softmax, and on the logits with its own softmax: via_logits) equals the XLA op;
    returns the former's outputs and gradients."""
    want, want_total, want_grads = _loss_and_grads('xla', labels, logits, num_classes, margin, sizes, *weights)
    results = []
    for via_logits in (False, True):
        got, got_total, got_grads = _loss_and_grads('kernel', labels, logits, num_classes, margin, sizes, *weights,
                                                    via_logits=via_logits)
        for index in range(2):
            np.testing.assert_allclose(got[index], want[index], **VALUE_TOL)
        for index in (2, 3):
            np.testing.assert_array_equal(got[index], want[index])
        np.testing.assert_allclose(got_total, want_total, **VALUE_TOL)
        (_assert_logits_grad_close if via_logits else _assert_grad_close)(got_grads[0], want_grads[0])
        for g, w in zip(got_grads[1:], want_grads[1:]):
            _assert_grad_close(g, w)
        results.append((got, got_grads))
    return results[0]


def test_kernel_matches_golden_affinity_loss(golden, assert_golden):
    ins, outs, case = golden('aaf_affinity_loss')
    num_classes, margin = case['scalars']['num_classes'], case['scalars']['kld_margin']
    logits = tf.constant(ins['logits'])
    with tf.GradientTape() as tape:
        tape.watch(logits)
        edge, not_edge, edge_count, not_edge_count = affinity_field_loss(
            ins['labels'], tf.nn.softmax(logits), num_classes, margin, sizes=(1,), impl='kernel')
        loss = edge[0] + not_edge[0]
    np.testing.assert_allclose([edge[0], not_edge[0], loss], [outs['edge_mean'], outs['not_edge_mean'],
                                                              outs['loss']], rtol=1e-5)
    assert int(edge_count[0]) == outs['edge_count'] and int(not_edge_count[0]) == outs['not_edge_count']
    assert_golden(tape.gradient(loss, logits), outs['grad_logits'], case['tolerance']['out_grad_logits'])
    _assert_kernel_equals_xla(ins['labels'], ins['logits'], num_classes, margin, (1,))


def test_kernel_matches_golden_adaptive_affinity_loss(golden, assert_golden):
    ins, outs, case = golden('aaf_adaptive_affinity_loss')
    tol = case['tolerance']
    num_classes, margin = case['scalars']['num_classes'], case['scalars']['kld_margin']
    weights = literal.AdaptiveAffinityWeights(num_classes)
    weights.edge_w.assign(ins['w_edge_raw'])
    weights.nonedge_w.assign(ins['w_not_edge_raw'])
    logits = tf.constant(ins['logits'])
    with tf.GradientTape() as tape:
        tape.watch(logits)
        edge, not_edge, edge_count, not_edge_count = literal.adaptive_affinity_loss_fused(
            ins['labels'], tf.nn.softmax(logits), num_classes, margin, weights.edge_w, weights.nonedge_w,
            impl='kernel')
        loss = tf.reduce_sum(edge + not_edge)
    for index, size in enumerate((1, 2, 3)):
        np.testing.assert_allclose([edge[index], not_edge[index]],
                                   [outs[f'edge_mean_s{size}'], outs[f'not_edge_mean_s{size}']], rtol=1e-5)
        assert int(edge_count[index]) == outs[f'edge_count_s{size}']
        assert int(not_edge_count[index]) == outs[f'not_edge_count_s{size}']
    np.testing.assert_allclose(loss, outs['aaf_loss'], rtol=1e-5)
    grads = tape.gradient(loss, [logits, weights.edge_w, weights.nonedge_w])
    assert_golden(grads[0], outs['grad_logits'], tol['out_grad_logits'])
    assert_golden(grads[1], outs['grad_w_edge_raw'], tol['out_grad_w_edge_raw'])
    assert_golden(grads[2], outs['grad_w_not_edge_raw'], tol['out_grad_w_not_edge_raw'])
    _assert_kernel_equals_xla(ins['labels'], ins['logits'], num_classes, margin, (1, 2, 3), ins['w_edge_raw'],
                              ins['w_not_edge_raw'])


# Channel counts hit the kernel's static paths (8, 24 = padded 21, 32) and the dynamic one (37); odd image
# sizes, size lists with gaps, margins with and without active hinges.
@pytest.mark.parametrize('seed, shape, num_classes, sizes, margin', [
    (0, (2, 9, 11), 5, (1, 2, 3), 3.0),
    (1, (1, 13, 7), 21, (1, 2, 3), 3.0),
    (2, (3, 5, 6), 8, (2,), 0.5),
    (3, (1, 10, 9), 37, (1, 3), 3.0),
    (4, (2, 11, 10), 3, (1, 4), 1.0),
])
def test_kernel_equals_xla_and_literal_on_random_shapes(seed, shape, num_classes, sizes, margin):
    labels, logits, w_edge, w_not_edge = _random_case(seed, shape, num_classes)
    if len(sizes) != 3:
        w_edge, w_not_edge = w_edge[..., :len(sizes)], w_not_edge[..., :len(sizes)]
    got, got_grads = _assert_kernel_equals_xla(labels, logits, num_classes, margin, sizes, w_edge, w_not_edge)
    edges, not_edges, counts, ref_grads = _literal_means(labels, logits, num_classes, margin, sizes, w_edge,
                                                         w_not_edge)
    assert all(e > 0 and ne > 0 for e, ne in counts), 'every size of these cases has edges and non-edges'
    np.testing.assert_allclose(got[0], edges, **VALUE_TOL)
    np.testing.assert_allclose(got[1], not_edges, **VALUE_TOL)
    np.testing.assert_array_equal(got[2], [e for e, _ in counts])
    np.testing.assert_array_equal(got[3], [ne for _, ne in counts])
    for g, w in zip(got_grads, ref_grads):
        _assert_grad_close(g, w)


def test_single_class_and_all_ignore_images():
    labels, logits, _, _ = _random_case(5, (2, 6, 7), 4, ignore=0.0)
    labels[0] = 2  # image 0: one class -> no edges there
    labels[1] = 255  # image 1: all ignored -> no pairs, zero gradient
    got, grads = _assert_kernel_equals_xla(labels, logits, 4, 3.0, (1, 2))
    np.testing.assert_array_equal(got[2], [0, 0])
    np.testing.assert_array_equal(got[0], [0.0, 0.0])  # empty edge set -> 0 (Q-A3 divergence)
    assert np.all(got[3] > 0)
    assert not np.any(grads[0][1]) and np.any(grads[0][0])
    edges, not_edges, _, ref_grads = _literal_means(labels, logits, 4, 3.0, (1, 2))
    assert np.all(np.isnan(edges))  # the original's mean of an empty set
    np.testing.assert_allclose(got[1], not_edges, **VALUE_TOL)
    # All pixels ignored everywhere: everything 0, no NaN.
    got, grads = _assert_kernel_equals_xla(np.full_like(labels, 255), logits, 4, 3.0, (1, 2, 3))
    assert not np.any(np.concatenate(got)) and not np.any(grads[0])


def test_stashed_logs_give_the_same_gradient_over_several_bands(kernel):
    """The forward's stash of log P~, log (1-P)~ (stash_logs=True) and the gradient op's own logs (the default)
    give identical gradients; 70 rows make several row bands with halos."""
    labels, logits, w_edge, w_not_edge = _random_case(8, (2, 70, 13), 21, block=3)
    _assert_kernel_equals_xla(labels, logits, 21, 3.0, (1, 2, 3), w_edge, w_not_edge)
    labels = np.where(labels[..., 0] < 21, labels[..., 0], -1).astype(np.int32)
    probs = tf.nn.softmax(logits)
    stashed = kernel.affinity_field_sums(labels, probs, sizes=[1, 2, 3], kld_margin=3.0, stash_logs=True)
    plain = kernel.affinity_field_sums(labels, probs, sizes=[1, 2, 3], kld_margin=3.0)
    assert stashed[3].shape == (2, 70, 13, 2, 21) and plain[3].shape == (0,)
    clipped = np.clip(probs.numpy(), 1e-4, 1.0), np.clip(1.0 - probs.numpy(), 1e-4, 1.0)
    np.testing.assert_allclose(stashed[3], np.log(np.stack(clipped, -2)), rtol=1e-6, atol=1e-7)
    for got, want in zip(stashed[:3], plain[:3]):
        np.testing.assert_array_equal(got, want)
    grad_sums = np.random.default_rng(8).normal(size=(21, 6)).astype(np.float32)
    with_stash = kernel.affinity_field_sums_grad(labels, probs, grad_sums, stashed[3], sizes=[1, 2, 3],
                                                 kld_margin=3.0)
    recomputed = kernel.affinity_field_sums_grad(labels, probs, grad_sums, plain[3], sizes=[1, 2, 3],
                                                 kld_margin=3.0)
    np.testing.assert_array_equal(with_stash, recomputed)
    assert np.any(with_stash.numpy())
    with pytest.raises(tf.errors.InvalidArgumentError, match='logs must be'):
        kernel.affinity_field_sums_grad(labels, probs, grad_sums, stashed[3][:1], sizes=[1, 2, 3], kld_margin=3.0)


def test_cached_bytes_count_the_buffers_kept_between_calls(kernel):
    """The benchmark adds cached_bytes() to its resident-set reading: it must cover at least the gradient op's
    per-pixel planes and padded label map ([2S + 1] planes of N x (H + 4 max(size)) x (W + 4 max(size)))."""
    labels, logits, _, _ = _random_case(9, (3, 40, 50), 6)
    labels = np.where(labels[..., 0] < 6, labels[..., 0], -1).astype(np.int32)
    kernel.affinity_field_sums_grad(labels, logits, np.ones((6, 6), np.float32), tf.zeros([0]), sizes=[1, 2, 3],
                                    kld_margin=3.0, from_logits=True)
    planes_and_labels = 7 * 3 * (40 + 12) * (50 + 12) * 4
    assert affinity_kernel.cached_bytes() >= planes_and_labels


def test_kernel_in_graph_mode_with_unknown_shapes_and_engine_style_tape():
    labels, logits, _, _ = _random_case(6, (2, 7, 9), 5)
    spec = [tf.TensorSpec([None, None, None, 1], tf.uint8), tf.TensorSpec([None, None, None, 5], tf.float32)]

    @tf.function(input_signature=spec)
    def step(labels, logits):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            out = affinity_field_loss(labels, tf.nn.softmax(logits), 5, 3.0, sizes=(1, 2, 3), impl='auto')
            loss = tf.reduce_sum(out[0] + out[1])
        return loss, tape.gradient(loss, logits)

    loss, grad = step(labels, logits)
    ops = {op.type for op in step.get_concrete_function().graph.get_operations()}
    assert 'AffinityFieldSums' in ops  # 'auto' picked the kernel on CPU
    logits = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        out = affinity_field_loss(labels, tf.nn.softmax(logits), 5, 3.0, sizes=(1, 2, 3), impl='xla')
        want = tf.reduce_sum(out[0] + out[1])
    np.testing.assert_allclose(loss, want, **VALUE_TOL)
    _assert_grad_close(grad, tape.gradient(want, logits))


def test_auto_uses_xla_inside_jit_compile():
    labels, logits, _, _ = _random_case(7, (1, 6, 6), 3)
    probs = tf.nn.softmax(logits)
    compiled = tf.function(lambda p: affinity_field_loss(labels, p, 3, 3.0, sizes=(1, 2), impl='auto')[:2],
                           jit_compile=True)
    eager = affinity_field_loss(labels, probs, 3, 3.0, sizes=(1, 2), impl='kernel')
    for got, want in zip(compiled(probs), eager[:2]):
        np.testing.assert_allclose(got, want, **VALUE_TOL)
    assert resolve_impl('auto') == 'kernel' and resolve_impl('xla') == 'xla'


def test_bad_inputs_are_rejected(kernel):
    with pytest.raises(ValueError, match='impl'):
        affinity_field_loss(np.zeros((1, 4, 4, 1), np.uint8), np.full((1, 4, 4, 2), 0.5, np.float32), 2, 3.0,
                            impl='cuda')
    with pytest.raises(tf.errors.InvalidArgumentError, match='disagree on N,H,W'):
        kernel.affinity_field_sums(np.zeros((1, 4, 5), np.int32), np.full((1, 4, 4, 2), 0.5, np.float32),
                                   sizes=[1], kld_margin=3.0)
    with pytest.raises(ValueError, match='contradicts'):
        literal.resolve_loss_impl(fused=False, impl='kernel')
    assert literal.resolve_loss_impl(True, None) == 'auto' and literal.resolve_loss_impl(False, None) == 'reference'


def test_failed_build_falls_back_to_xla_with_one_log_line(monkeypatch, tmp_path, caplog):
    """A compiler that fails (or is missing) leaves 'auto' on the XLA op with ONE warning; 'kernel' raises."""
    labels, logits, _, _ = _random_case(8, (1, 6, 7), 4)
    probs = tf.nn.softmax(logits)
    want = affinity_field_loss(labels, probs, 4, 3.0, sizes=(1, 2), impl='xla')
    monkeypatch.setenv(affinity_kernel.CACHE_ENV, str(tmp_path))  # empty cache: a build is needed
    for compiler, reason in (('false', 'failed'), ('no-such-compiler-xyz', 'no C++ compiler')):
        monkeypatch.setenv(affinity_kernel.COMPILER_ENV, compiler)
        affinity_kernel._reset_for_tests()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger='common.ops.affinity_fused'):
            for _ in range(3):
                got = affinity_field_loss(labels, probs, 4, 3.0, sizes=(1, 2), impl='auto')
        records = [r for r in caplog.records if 'kernel unavailable' in r.getMessage()]
        assert len(records) == 1 and reason in records[0].getMessage()
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
        with pytest.raises(affinity_kernel.KernelUnavailableError, match=re.escape(reason)):
            affinity_field_loss(labels, probs, 4, 3.0, sizes=(1, 2), impl='kernel')
    assert not list(tmp_path.iterdir())  # no half-written library left behind
    affinity_kernel._reset_for_tests()
