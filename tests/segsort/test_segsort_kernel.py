"""segsort.kernel: the compiled NCA-likelihood and k-means ops against the TensorFlow path (the oracle) on random
shapes (odd pixel counts and dims, ignored pixels, prototypes without pixels, empty clusters, memory banks with one
or several labels), the registered gradient, the impl choice and the fallback when the build fails.

The library is compiled once per machine into the kernel cache (~/.cache/affinity-seg or $AFFINITY_SEG_CACHE);
a fresh machine pays ~20-60 s of g++ in the first test that loads it."""
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


def _segment_loss_and_grad(impl, emb, segment_ids, prototype_labels, kappa, memory=None, memory_labels=None):
    """segment_loss: the kernel in float32, or the TensorFlow path in float64 (the oracle)."""
    dtype = np.float32 if impl == 'kernel' else np.float64
    emb = tf.constant(emb, dtype)
    with tf.GradientTape() as tape:
        tape.watch(emb)
        loss, prototypes = losses.segment_loss(emb, None, segment_ids, prototype_labels, kappa,
                                               None if memory is None else memory.astype(dtype), memory_labels,
                                               impl=impl)
        loss = 2.5 * loss  # an upstream gradient other than 1
    return loss.numpy(), tape.gradient(loss, emb).numpy(), prototypes.numpy()


def _segments(rng, n, s):
    """Segment ids [n] using every one of s segments (n >= s), in random order."""
    return rng.permutation(np.concatenate([np.arange(s), rng.integers(0, s, n - s)])).astype(np.int32)


@pytest.mark.parametrize('n, d, s, m, several_memory_labels, kappa', [
    (1, 1, 1, 0, False, 10.0),       # one pixel, one segment: the own-segment numerator, loss 0
    (37, 7, 5, 0, False, 10.0),      # odd sizes, no memory
    (203, 33, 41, 19, False, 10.0),  # dim just above a vector, the inert one-label memory
    (150, 32, 70, 50, True, 5.0),    # memory with several labels (one, 7, that no pixel has)
    (264, 64, 3, 200, True, 20.0),   # few segments, many memory prototypes
])
def test_nca_kernel_matches_tensorflow_path(n, d, s, m, several_memory_labels, kappa):
    rng = np.random.default_rng(n + d + s + m)
    emb = _unit(rng, n, d)
    segment_ids = _segments(rng, n, s)
    prototype_labels = rng.integers(0, 3, size=s).astype(np.int32)
    memory = _unit(rng, m, d) if m else None
    memory_labels = None
    if m:
        memory_labels = (rng.choice(np.array([0, 1, 2, 7], np.int32), m) if several_memory_labels
                         else np.zeros(m, np.int32))
    got = _segment_loss_and_grad('kernel', emb, segment_ids, prototype_labels, kappa, memory, memory_labels)
    want = _segment_loss_and_grad('tf', emb, segment_ids, prototype_labels, kappa, memory, memory_labels)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-3, atol=1e-5 * max(np.abs(want[1]).max(), 1e-6))
    np.testing.assert_allclose(got[2], want[2], rtol=1e-5, atol=1e-6)


def test_nca_kernel_leaves_out_pixels_of_segment_minus_one():
    rng = np.random.default_rng(11)
    emb, labels = _unit(rng, 300, 32), rng.integers(0, 4, size=12).astype(np.int32)
    counted = rng.random(300) > 0.2
    ids = np.full(300, -1, np.int32)
    ids[counted] = _segments(rng, counted.sum(), 12)
    memory, memory_labels = _unit(rng, 30, 32), np.zeros(30, np.int32)
    got = _segment_loss_and_grad('kernel', emb, ids, labels, 10.0, memory, memory_labels)
    want = _segment_loss_and_grad('tf', emb[counted], ids[counted], labels, 10.0, memory, memory_labels)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    assert not got[1][~counted].any()
    np.testing.assert_allclose(got[1][counted], want[1], rtol=1e-3, atol=1e-5 * np.abs(want[1]).max())


def test_nca_kernel_segment_without_pixels_gives_nan_as_the_tensorflow_path():
    rng = np.random.default_rng(12)
    emb, ids = _unit(rng, 40, 8), rng.integers(0, 5, 40).astype(np.int32)  # segment 5 has no pixel: NaN prototype
    labels = np.array([0, 1, 0, 1, 2, 2], np.int32)
    for impl in ('kernel', 'tf'):
        loss, _, prototypes = _segment_loss_and_grad(impl, emb, ids, labels, 10.0)
        assert np.isnan(loss) and np.isnan(prototypes[5]).all() and not np.isnan(prototypes[:5]).any()


@pytest.mark.parametrize('kappa', [10.0, 60.0])
def test_nca_kernel_exp_over_the_logit_range(kappa):
    """One pixel on its own segment, memory prototypes of another class at angles 0..pi: logits kappa cos(angle)
    span [-kappa, kappa]; loss = log(1 + sum_m exp(kappa cos_m) / exp(kappa)) in float64."""
    angles = np.linspace(0, np.pi, 37)
    memory = np.stack([np.cos(angles), np.sin(angles)], 1).astype(np.float32)
    emb = np.array([[1, 0]], np.float32)
    loss, _ = kernel.nca_loss(emb, [0], [0], memory, np.ones(37, np.int32), kappa)
    cosines = memory.astype(np.float64) @ emb[0].astype(np.float64)
    np.testing.assert_allclose(loss.numpy(), np.log1p(np.exp(kappa * (cosines - 1)).sum()), rtol=2e-6)


def test_nca_kernel_gradient_is_the_upstream_times_the_forward_gradient():
    rng = np.random.default_rng(4)
    emb = tf.constant(_unit(rng, 50, 8))
    args = (_segments(rng, 50, 6), np.array([0, 0, 1, 1, 2, 2], np.int32), np.zeros([0, 8], np.float32),
            np.zeros([0], np.int32), 10.0)
    loss, grad_emb, _ = kernel.LIBRARY.load().segsort_nca_loss(emb, *args)
    with tf.GradientTape() as tape:
        tape.watch(emb)
        squared = tf.square(kernel.nca_loss(emb, *args)[0])
    np.testing.assert_allclose(tape.gradient(squared, emb), 2 * loss * grad_emb, rtol=1e-6)


def test_nca_kernel_is_deterministic_and_rejects_bad_segment_ids():
    rng = np.random.default_rng(3)
    emb, ids = _unit(rng, 900, 32), _segments(rng, 900, 30)
    args = ((np.arange(30) % 4).astype(np.int32), _unit(rng, 40, 32), np.zeros(40, np.int32), 10.0)
    first = [t.numpy() for t in kernel.LIBRARY.load().segsort_nca_loss(emb, ids, *args)]
    second = [t.numpy() for t in kernel.LIBRARY.load().segsort_nca_loss(emb, ids, *args)]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    bad_ids = ids.copy()
    bad_ids[5] = 30
    with pytest.raises(tf.errors.InvalidArgumentError, match='segment id 30'):
        kernel.nca_loss(emb, bad_ids, *args)


@pytest.mark.parametrize('batch, size, features, grid, void, raw', [
    (3, (13, 11), 32, 3, 0.2, True),   # raw embedding + 2 location features, normalised in the op
    (2, (20, 20), 9, 5, 0.0, False),   # unit features, no locations
])
def test_kmeans_kernel_matches_tensorflow_path(batch, size, features, grid, void, raw):
    rng = np.random.default_rng(batch * features)
    # Clustered data (well-separated means) so that no pixel sits on a near-tie between two clusters.
    means = _unit(rng, 6, features)
    which = rng.integers(0, 6, size=(batch, size[0] * size[1]))
    emb = means[which] + 0.3 * rng.normal(size=which.shape + (features,)).astype(np.float32)
    locations = None
    if raw:
        emb *= rng.uniform(0.5, 3, size=which.shape + (1,)).astype(np.float32)
        locations = np.broadcast_to(clustering.generate_location_features(size, 'float').numpy().reshape(1, -1, 2),
                                    which.shape + (2,)).astype(np.float32)
        unit = clustering.normalize_embedding(emb)
        oracle_features = clustering.normalize_embedding(tf.concat([unit, locations], 2))
    else:
        emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
        oracle_features = emb
    initial = np.broadcast_to(clustering.initialize_cluster_labels([grid, grid], size).numpy().reshape(1, -1),
                              which.shape).astype(np.int32).copy()
    initial[0, :size[1] * 4] = 0  # image 0: the first rows all in cluster 0 -> other clusters may go empty
    valid = rng.random(which.shape) >= void
    clusters = grid * grid + 2  # two ids no pixel starts in: empty from the first M-step
    got = kernel.batch_kmeans(emb, initial, clusters, 10, valid, locations, normalize_embedding=raw).numpy()
    want = clustering.batch_kmeans_with_initial_labels(oracle_features, initial, clusters, 10, valid).numpy()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got[~valid], initial[~valid])
    assert (got != initial)[valid].any()  # the clustering did move pixels


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
