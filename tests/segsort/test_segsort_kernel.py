"""segsort.kernel: the compiled NCA-likelihood and k-means ops against the TensorFlow path (the oracle) on random
shapes (odd pixel counts and dims, ignored pixels, prototypes without pixels, empty clusters, memory banks with one
or several labels), the registered gradient, the impl choice and the fallback when the build fails.

The library is compiled once per machine into the kernel cache (~/.cache/affinity-seg or $AFFINITY_SEG_CACHE);
a fresh machine pays ~15 s of g++ in the first test that loads it."""
import logging
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from common.ops import affinity_kernel
from segsort import clustering, kernel, losses

pytestmark = pytest.mark.skipif(shutil.which('g++') is None, reason='the kernel is built with g++')


@pytest.fixture(scope='module', autouse=True)
def library():
    kernel.LIBRARY.reset_for_tests()
    yield kernel.LIBRARY.load(raise_errors=True)
    kernel.LIBRARY.reset_for_tests()


def _unit(rng, *shape):
    x = rng.normal(size=shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _nca_loss_and_grads(impl, emb, protos, segment_ids, pixel_class, proto_class, num_classes, kappa, memory=None,
                        memory_class=None):
    """Loss and gradients of the kernel (float32) or of the TensorFlow path in float64 (the oracle)."""
    dtype = np.float32 if impl == 'kernel' else np.float64
    emb, protos = tf.constant(emb, dtype), tf.constant(protos, dtype)
    with tf.GradientTape() as tape:
        tape.watch([emb, protos])
        if impl == 'kernel':
            d = emb.shape[1]
            mem = np.zeros([0, d], np.float32) if memory is None else memory
            mem_class = np.zeros([0], np.int32) if memory is None else memory_class
            loss = kernel.nca_loss(emb, protos, mem, segment_ids, pixel_class, proto_class, mem_class, kappa)
        else:
            block = None
            if memory is not None:
                block = losses._PrototypeBlock(tf.constant(memory, dtype), tf.constant(memory_class), lambda c: c,
                                               num_classes, dtype)
            loss = losses.vmf_nca_loss(emb, protos, segment_ids, proto_class, pixel_class, num_classes, kappa, block)
        loss = 2.5 * loss  # an upstream gradient other than 1
    return [loss.numpy()] + [g.numpy() for g in tape.gradient(loss, [emb, protos])]


@pytest.mark.parametrize('n, d, s, m, memory_classes, kappa', [
    (1, 1, 1, 0, 1, 10.0),       # one pixel, one prototype: the own-segment numerator, loss 0
    (37, 7, 5, 0, 1, 10.0),      # odd sizes, no memory
    (203, 33, 41, 19, 1, 10.0),  # dim just above a vector, the inert one-label memory
    (150, 32, 70, 50, 4, 5.0),   # memory with several labels (one no pixel has)
    (64, 64, 3, 200, 2, 20.0),   # few segments, many memory prototypes
])
def test_nca_kernel_matches_tensorflow_path(n, d, s, m, memory_classes, kappa):
    rng = np.random.default_rng(n + d + s + m)
    emb, protos = _unit(rng, n, d), _unit(rng, s, d)
    num_classes = max(3, memory_classes)
    proto_class = rng.integers(0, 3, size=s).astype(np.int32)
    # Pixels use only the first half of the prototypes: the others have no pixel (still in every sum).
    segment_ids = rng.integers(0, max(1, s // 2), size=n).astype(np.int32)
    pixel_class = proto_class[segment_ids]
    memory = _unit(rng, m, d) if m else None
    memory_class = rng.integers(0, memory_classes, size=m).astype(np.int32) if m else None
    got = _nca_loss_and_grads('kernel', emb, protos, segment_ids, pixel_class, proto_class, num_classes, kappa,
                              memory, memory_class)
    want = _nca_loss_and_grads('tf', emb, protos, segment_ids, pixel_class, proto_class, num_classes, kappa,
                               memory, memory_class)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    for g, w in zip(got[1:], want[1:]):
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-5 * max(np.abs(w).max(), 1e-6))


@pytest.mark.parametrize('kappa', [10.0, 60.0])
def test_nca_kernel_exp_over_the_logit_range(kappa):
    """One pixel on its own segment, memory prototypes of another class at angles 0..pi: logits kappa cos(angle)
    span [-kappa, kappa]; loss = log(1 + sum_m exp(kappa cos_m) / exp(kappa)) in float64."""
    angles = np.linspace(0, np.pi, 37)
    memory = np.stack([np.cos(angles), np.sin(angles)], 1).astype(np.float32)
    emb = np.array([[1, 0]], np.float32)
    loss = kernel.nca_loss(emb, emb, memory, [0], [0], [0], np.ones(37, np.int32), kappa).numpy()
    cosines = memory.astype(np.float64) @ emb[0].astype(np.float64)
    np.testing.assert_allclose(loss, np.log1p(np.exp(kappa * (cosines - 1)).sum()), rtol=2e-6)


def test_nca_kernel_gradient_is_the_upstream_times_the_forward_gradients():
    rng = np.random.default_rng(4)
    emb, protos = tf.constant(_unit(rng, 50, 8)), tf.constant(_unit(rng, 6, 8))
    ids = rng.integers(0, 6, 50).astype(np.int32)
    classes = np.array([0, 0, 1, 1, 2, 2], np.int32)
    args = (np.zeros([0, 8], np.float32), ids, classes[ids], classes, np.zeros([0], np.int32), 10.0)
    _, grad_emb, grad_protos = kernel.LIBRARY.load().segsort_nca_loss(emb, protos, *args)
    with tf.GradientTape() as tape:
        tape.watch([emb, protos])
        loss = tf.square(kernel.nca_loss(emb, protos, *args))
    got = tape.gradient(loss, [emb, protos])
    upstream = 2 * kernel.nca_loss(emb, protos, *args)
    np.testing.assert_allclose(got[0], upstream * grad_emb, rtol=1e-6)
    np.testing.assert_allclose(got[1], upstream * grad_protos, rtol=1e-6)


def test_nca_kernel_is_deterministic_and_rejects_bad_segment_ids():
    rng = np.random.default_rng(3)
    args = (_unit(rng, 900, 32), _unit(rng, 30, 32), _unit(rng, 40, 32), rng.integers(0, 30, 900).astype(np.int32))
    pixel_class = (args[3] % 4).astype(np.int32)
    classes = (np.arange(30) % 4).astype(np.int32)
    first = [t.numpy() for t in kernel.LIBRARY.load().segsort_nca_loss(*args, pixel_class, classes,
                                                                       np.zeros(40, np.int32), 10.0)]
    second = [t.numpy() for t in kernel.LIBRARY.load().segsort_nca_loss(*args, pixel_class, classes,
                                                                        np.zeros(40, np.int32), 10.0)]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    bad_ids = args[3].copy()
    bad_ids[5] = 30
    with pytest.raises(tf.errors.InvalidArgumentError, match='segment id 30'):
        kernel.nca_loss(args[0], args[1], args[2], bad_ids, pixel_class, classes, np.zeros(40, np.int32), 10.0)


@pytest.mark.parametrize('batch, size, features, grid, void', [(3, (13, 11), 34, 3, 0.2), (2, (20, 20), 9, 5, 0.0)])
def test_kmeans_kernel_matches_tensorflow_path(batch, size, features, grid, void):
    rng = np.random.default_rng(batch * features)
    # Clustered data (well-separated means) so that no pixel sits on a near-tie between two clusters.
    means = _unit(rng, 6, features)
    which = rng.integers(0, 6, size=(batch, size[0] * size[1]))
    emb = means[which] + 0.3 * rng.normal(size=which.shape + (features,)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
    initial = np.broadcast_to(clustering.initialize_cluster_labels([grid, grid], size).numpy().reshape(1, -1),
                              which.shape).astype(np.int32).copy()
    initial[0, :size[1] * 4] = 0  # image 0: the first rows all in cluster 0 -> other clusters may go empty
    valid = rng.random(which.shape) >= void
    clusters = grid * grid + 2  # two ids no pixel starts in: empty from the first M-step
    got = kernel.batch_kmeans(emb, initial, clusters, 10, valid).numpy()
    want = clustering.batch_kmeans_with_initial_labels(emb, initial, clusters, 10, valid).numpy()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got[~valid], initial[~valid])


def _segsort_case(seed, batch=2, size=(9, 13), dim=32, void=0.15):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(batch,) + size + (dim,)).astype(np.float32)
    labels = rng.integers(0, 4, size=(batch,) + size + (1,)).astype(np.int32)
    labels[rng.random(labels.shape) < void] = 255
    grid = clustering.initialize_cluster_labels([3, 3], size).numpy()
    clusters = np.broadcast_to(grid[None, ..., None], labels.shape).astype(np.int32)
    loc = np.broadcast_to(clustering.generate_location_features(size, 'float').numpy()[None],
                          (batch,) + size + (2,)).astype(np.float32)
    return emb, labels, clusters, loc


@pytest.mark.parametrize('num_banks', [0, 2])
def test_add_segsort_loss_kernel_matches_tensorflow_path(num_banks):
    """Kernel (float32) against the TF path in float64 (the float32 TF path itself is ~2e-4 of max|grad| off)."""
    emb, labels, clusters, loc = _segsort_case(num_banks)
    results = {}
    for impl, dtype in (('tf', np.float64), ('kernel', np.float32)):
        bank = losses.MemoryBank(num_banks, 12, 32, seed=1) if num_banks else None
        if bank is not None and dtype == np.float64:
            bank.read = lambda bank=bank: tuple(tf.cast(t, np.float64) if t.dtype == tf.float32 else t
                                                for t in losses.MemoryBank.read(bank))
        e = tf.constant(emb, dtype)
        with tf.GradientTape() as tape:
            tape.watch(e)
            loss = losses.add_segsort_loss(e, labels, 32, 255, 10.0, clusters, 3, 10, num_banks, loc.astype(dtype),
                                           memory_bank=bank, impl=impl)
        results[impl] = loss.numpy(), tape.gradient(loss, e).numpy()
    np.testing.assert_allclose(results['kernel'][0], results['tf'][0], rtol=1e-5)
    want = results['tf'][1]
    np.testing.assert_allclose(results['kernel'][1], want, rtol=1e-3, atol=1e-4 * np.abs(want).max())
    assert not results['kernel'][1][labels[..., 0] == 255].any()  # ignored pixels get no gradient


def test_resolve_impl_choices():
    assert kernel.resolve_impl('tf') == 'tf'
    assert kernel.resolve_impl('auto') == 'kernel'  # CPU, float32, library loads
    assert kernel.resolve_impl('auto', tf.float64) == 'tf'
    assert kernel.resolve_impl('auto', tf.float32, dim=kernel.MAX_DIM + 1) == 'tf'
    with pytest.raises(ValueError, match='impl must be one of'):
        kernel.resolve_impl('fast')
    with pytest.raises(ValueError, match='float32'):
        kernel.resolve_impl('kernel', tf.float64)


def test_failed_build_falls_back_to_tensorflow_with_one_log_line(monkeypatch, tmp_path, caplog):
    """A failing or missing compiler leaves 'auto' on the TF ops with ONE warning; 'kernel' raises."""
    emb, labels, clusters, loc = _segsort_case(5, batch=1)
    want = losses.add_segsort_loss(emb, labels, 32, 255, 10.0, clusters, 3, 4, 0, loc, impl='tf').numpy()
    monkeypatch.setenv(affinity_kernel.CACHE_ENV, str(tmp_path))  # empty cache: a build is needed
    for compiler, reason in (('false', 'failed'), ('no-such-compiler-xyz', 'no C++ compiler')):
        monkeypatch.setenv(affinity_kernel.COMPILER_ENV, compiler)
        kernel.LIBRARY.reset_for_tests()
        monkeypatch.setattr(kernel, '_fallback_logged', [])
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger='segsort.kernel'):
            for _ in range(3):
                got = losses.add_segsort_loss(emb, labels, 32, 255, 10.0, clusters, 3, 4, 0, loc, impl='auto')
        records = [r for r in caplog.records if 'kernel unavailable' in r.getMessage()]
        assert len(records) == 1 and reason in records[0].getMessage()
        np.testing.assert_array_equal(got.numpy(), want)
        with pytest.raises(kernel.KernelUnavailableError, match=re.escape(reason)):
            losses.add_segsort_loss(emb, labels, 32, 255, 10.0, clusters, 3, 4, 0, loc, impl='kernel')
    assert not list(tmp_path.iterdir())  # no half-written library left behind
    kernel.LIBRARY.reset_for_tests()
