"""Compiled CPU kernels of A2GNN's per-image GNN step (`kernels/gnn_ops.cc`), built on first use.

Window attention: one op computes a layer's output on a `NeighbourGraph` directly from each node's (2r+1)^2 window
(plus the softmax weights, cosines and norms the gradient reuses); its gradient op (registered for tf.GradientTape)
writes each node's gradient from its own window, reading the reverse slots of its neighbours instead of scattering,
so results do not depend on threading. The maths is `a2gnn.model.dense_attention` restricted to the window (see the
source's header); `a2gnn.model.window_attention` is the TensorFlow form and the test oracle.

Split cross-entropy: the bg / fg sums of the pixel cross-entropies of the bilinearly upsampled node logits, each
labelled pixel interpolated from its 4 nodes on the fly (no [H, W, C] prediction, unlabelled pixels skipped); the
gradient op pulls each pixel's gradient back per pixel row, then per node row (`a2gnn.losses.split_ce_from_nodes`
uses it; its TensorFlow form is the oracle).

Build and fallback as the affinity-field kernel (`common.ops.kernel_build.OpLibrary`): compiled into the kernel
cache on first use; when that fails (no compiler, headers), `window_attention(impl='auto')` logs one line and
uses the TensorFlow form. CPU only: with a visible GPU, or inside an XLA-compiled function, 'auto' takes the
TensorFlow form too.
"""
import logging
import os

import numpy as np
import tensorflow as tf

from a2gnn.graph import neighbour_index
from common.ops.kernel_build import KernelUnavailableError, OpLibrary, vector_flags

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'kernels', 'gnn_ops.cc')
# AVX-512 where present: the attention's dot products and axpys run over 256-float rows.
LIBRARY = OpLibrary('a2gnn_gnn_ops', SOURCE, ['-fopenmp-simd', '-ffp-contract=fast'] + vector_flags(avx512=True))
IMPLEMENTATIONS = ('auto', 'kernel', 'tf')
__all__ = ['IMPLEMENTATIONS', 'KernelUnavailableError', 'LIBRARY', 'graph_tensors', 'load_kernel', 'resolve_impl',
           'split_cross_entropy_sums', 'window_attention_kernel']
_logger = logging.getLogger(__name__)


@tf.autograph.experimental.do_not_convert
def load_kernel(raise_errors=False):
    """The loaded op library (built on first use); None, or KernelUnavailableError, when unavailable."""
    return LIBRARY.load(raise_errors)


@tf.autograph.experimental.do_not_convert
def resolve_impl(impl):
    """'kernel' or 'tf' for `impl` in IMPLEMENTATIONS ('auto': the kernel on CPU when it loads)."""
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f'A2GNN kernels: impl must be one of {IMPLEMENTATIONS}, got {impl!r}')
    if impl == 'tf':
        return 'tf'
    if impl == 'kernel':
        load_kernel(raise_errors=True)
        return 'kernel'
    if LIBRARY.serves_auto(_logger, 'A2GNN C++ kernels unavailable (%s); using the TensorFlow forms'):
        return 'kernel'
    return 'tf'


def graph_tensors(graph):
    """(index int32 [N, K], adj float32 [N, K]) of a NeighbourGraph for the kernel, built once per graph outside
    any function being traced (a step function captures them).

    Raises:
      ValueError: the window is not symmetric (the gradient reads q's slot in p's window as slot K-1-k).
    """
    cache = graph.__dict__.setdefault('_kernel_tensors', {})
    if not cache:
        n, k = graph.num_nodes, graph.adj.shape[-1]
        index = neighbour_index(graph)
        valid = index < n
        rows = np.broadcast_to(np.arange(n)[:, None], index.shape)
        back = index[np.minimum(index, n - 1), k - 1 - np.arange(k)[None, :]]
        if not np.array_equal(np.where(valid, back, rows), rows):
            raise ValueError('window attention kernel: the neighbour windows are not symmetric')
        with tf.init_scope():
            cache['index'] = tf.constant(index.astype(np.int32))
            cache['adj'] = tf.constant(np.where(valid, graph.adj.reshape(n, k), 0.0).astype(np.float32))
    return cache['index'], cache['adj']


def window_attention_kernel(h, beta, graph):
    """One attention layer on a NeighbourGraph with the compiled kernel: h [N, F], beta scalar -> [N, F]."""
    index, adj = graph_tensors(graph)
    out, _, _, _ = load_kernel(raise_errors=True).a2gnn_window_attention(
        tf.convert_to_tensor(h, tf.float32), tf.reshape(tf.convert_to_tensor(beta, tf.float32), ()), index, adj)
    return out


@tf.RegisterGradient('A2gnnWindowAttention')
def _window_attention_grad(op, grad_out, *_unused):
    """Gradient w.r.t. h and beta (only `out` is differentiable; the graph inputs get none)."""
    h, beta, index, _ = op.inputs
    _, weights, cos, norms = op.outputs
    grad_h, grad_beta = load_kernel(raise_errors=True).a2gnn_window_attention_grad(
        h, beta, index, weights, cos, norms, grad_out)
    return grad_h, grad_beta, None, None


def split_cross_entropy_sums(logits, labels, row_taps, col_taps):
    """The bg and fg sums of the pixel cross-entropies of node logits [f_h, f_w, C] upsampled by the taps.

    Args:
      logits: [f_h, f_w, C] float32; labels: [H, W] int32 (0 bg, 1..C-1 fg, 255 none).
      row_taps, col_taps: (index int32 [size, 2], weight float32 [size, 2]) of align_corners=False resizing
        along y and x.
    Returns:
      (sums float32 [2], differentiable w.r.t. logits; counts float32 [2] of bg and fg pixels).
    """
    return load_kernel(raise_errors=True).a2gnn_split_cross_entropy(logits, labels, *row_taps, *col_taps)


@tf.RegisterGradient('A2gnnSplitCrossEntropy')
def _split_cross_entropy_grad(op, grad_sums, _grad_counts):
    grad = load_kernel(raise_errors=True).a2gnn_split_cross_entropy_grad(*op.inputs, grad_sums)
    return (grad,) + (None,) * 5
