"""Compiled window-attention kernel (a2gnn.gnn_kernel): equal to the dense layer (the original's form) and to
the TensorFlow window form, values and gradients; fallback when it cannot be built."""
import logging
import shutil

import numpy as np
import pytest
import tensorflow as tf

from a2gnn import gnn_kernel
from a2gnn.graph import NeighbourGraph, neighbour_graph
from a2gnn.model import dense_attention, window_attention

needs_compiler = pytest.mark.skipif(shutil.which('g++') is None, reason='the kernel is built with g++')


def _case(f_h, f_w, radius, features, signed, seed=0):
    rng = np.random.default_rng(seed)
    d = 2 * radius + 1
    graph = neighbour_graph(np.exp(-np.abs(rng.normal(size=(f_h, f_w, d, d)))).astype(np.float32), radius)
    h = rng.normal(size=(f_h * f_w, features)).astype(np.float32)
    if not signed:
        h = np.abs(h) * (rng.random((f_h * f_w, 1)) < 0.9)  # non-negative, some all-zero rows (relu + dropout)
    return graph, tf.constant(h), rng.normal(size=(f_h * f_w, features)).astype(np.float32)


def _layer_and_grads(layer, h, beta, cotangent):
    with tf.GradientTape() as tape:
        tape.watch([h, beta])
        out = layer(h, beta)
        objective = tf.reduce_sum(out * cotangent)
    grad_h, grad_beta = tape.gradient(objective, [h, beta])
    return out.numpy(), grad_h.numpy(), grad_beta.numpy()


@needs_compiler
@pytest.mark.parametrize('f_h, f_w, radius, features, signed', [(9, 11, 3, 20, True), (7, 5, 1, 33, False),
                                                                 (4, 13, 2, 8, False)])
def test_kernel_equals_dense_layer_values_and_gradients(f_h, f_w, radius, features, signed):
    # Signed features exercise the cos < 0 mask, all-zero rows the zero-norm gradient; the windows are cut by
    # every border. The dense layer is the original's formulation.
    graph, h, cotangent = _case(f_h, f_w, radius, features, signed)
    adj, cropping = graph.to_dense()
    beta = tf.constant(0.8)
    got = _layer_and_grads(lambda h, b: window_attention(h, b, graph, impl='kernel'), h, beta, cotangent)
    want = _layer_and_grads(lambda h, b: dense_attention(h, b, adj, cropping), h, beta, cotangent)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    # A zero row's cosines divide by 1e-7 alone: its gradient (~1e3 here) carries rounding x 1e7, so 5e-4.
    np.testing.assert_allclose(got[1], want[1], rtol=5e-4, atol=1e-5)
    np.testing.assert_allclose(got[2], want[2], rtol=1e-4, atol=1e-5)


@needs_compiler
def test_kernel_is_deterministic_and_traceable():
    graph, h, cotangent = _case(12, 10, 3, 64, False, seed=4)
    beta = tf.Variable(0.3)

    @tf.function(autograph=False)
    def step():
        return _grads(h)

    def _grads(h):
        with tf.GradientTape() as tape:
            tape.watch(h)
            objective = tf.reduce_sum(window_attention(h, beta, graph, impl='kernel') * cotangent)
        return tape.gradient(objective, [h, beta])

    runs = [[g.numpy() for g in step()] for _ in range(3)]
    for run in runs[1:]:
        for a, b in zip(run, runs[0]):
            np.testing.assert_array_equal(a, b)
    eager = _grads(h)
    np.testing.assert_allclose(eager[0].numpy(), runs[0][0], rtol=1e-6, atol=1e-7)


def test_asymmetric_window_is_rejected():
    graph = neighbour_graph(np.ones((3, 4, 3, 3), np.float32), 1)
    index = graph.index.copy()
    index[0, 8] = 2  # node 0's lower-right neighbour is node 5; pretend it is node 2
    with pytest.raises(ValueError, match='not symmetric'):
        gnn_kernel.graph_tensors(NeighbourGraph(3, 4, 1, graph.adj, graph.valid, index))


def test_failed_build_falls_back_to_the_tensorflow_form(monkeypatch, tmp_path, caplog):
    graph, h, _ = _case(6, 7, 1, 5, True, seed=2)
    want = window_attention(h, 0.5, graph, impl='tf').numpy()
    monkeypatch.setenv('AFFINITY_SEG_CACHE', str(tmp_path))  # empty cache: a build is needed
    monkeypatch.setenv('AFFINITY_SEG_CXX', 'no-such-compiler-xyz')
    gnn_kernel.LIBRARY.reset_for_tests()
    try:
        with caplog.at_level(logging.WARNING, logger='a2gnn.gnn_kernel'):
            for _ in range(2):
                np.testing.assert_array_equal(window_attention(h, 0.5, graph).numpy(), want)
        records = [r for r in caplog.records if 'kernels unavailable' in r.getMessage()]
        assert len(records) == 1 and 'no C++ compiler' in records[0].getMessage()
        with pytest.raises(gnn_kernel.KernelUnavailableError, match='no C'):
            window_attention(h, 0.5, graph, impl='kernel')
        with pytest.raises(ValueError, match='impl'):
            window_attention(h, 0.5, graph, impl='fast')
    finally:
        gnn_kernel.LIBRARY.reset_for_tests()
