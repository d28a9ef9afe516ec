"""Compiled CPU kernel of the affinity-field loss (`kernels/affinity_field.cc`), built on first use.

The kernel computes the per-centre-class edge / non-edge sums of all sizes in one pass over the clipped
probabilities, and their gradient w.r.t. the probabilities (op `AffinityFieldSumsGrad`, registered as the
gradient of `AffinityFieldSums`, so it composes with tf.GradientTape and the training engine). Given the logits
(`from_logits`), both ops take the softmax themselves and the gradient is w.r.t. the logits. On request
(`stash_logs`, probabilities only) the forward keeps the logs of the clipped probabilities for the gradient.
`cached_bytes()` reports the buffers the ops keep between calls. The per-class
size weights, the means and their gradients are ordinary TensorFlow ops on the [C, 2S] sums.

Build: on first use the source is compiled with g++ and `tf.sysconfig` flags into a cache directory
(`$AFFINITY_SEG_CACHE` or `~/.cache/affinity-seg/`), keyed by a hash of the source, flags, compiler and
TensorFlow version, written under a temporary name and renamed atomically, then loaded with
`tf.load_op_library`. `load_kernel()` returns None when that fails (no compiler, incompatible headers, load
error); `common.ops.affinity_fused.affinity_field_loss(impl='auto')` then uses the XLA op and logs one line.
CPU only: there is no CUDA build; on a GPU the XLA op is used.
"""
import os

import tensorflow as tf

from common.ops.kernel_build import (CACHE_ENV, COMPILER_ENV, KernelUnavailableError, OpLibrary, cache_dir,
                                     vector_flags)

__all__ = ['CACHE_ENV', 'COMPILER_ENV', 'KernelUnavailableError', 'LIBRARY', 'SOURCE', 'affinity_field_class_sums',
           'build', 'cache_dir', 'cached_bytes', 'library_path', 'load_kernel']

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'kernels', 'affinity_field.cc')
# AVX-512 F/BW/DQ/VL where present, else AVX2 + FMA where present, else the compiler's baseline; -fopenmp-simd for
# the `omp simd` loops. The kernel keeps 8-float vectors either way: with AVX-512VL they get 32 registers instead of
# 16 (no spills in the backward's pair loop: ~12% faster) and the auto-vectorised log loops 16 lanes.
LIBRARY = OpLibrary('affinity_field', SOURCE, ['-fopenmp-simd'] + vector_flags(avx512=True))


def library_path(compiler='g++'):
    """Cache path of the library for this source, compiler flags and TensorFlow version."""
    return LIBRARY.library_path(compiler)


def build(compiler=None):
    """Compiles the kernel into the cache if it is not there yet; returns the library path.

    Raises:
      KernelUnavailableError: no compiler on PATH or the compilation failed (with the compiler's last lines).
    """
    return LIBRARY.build(compiler)


@tf.autograph.experimental.do_not_convert
def load_kernel(raise_errors=False):
    """The loaded op library, building it on first use; None (or KernelUnavailableError) when unavailable.

    The outcome is remembered for the process: a failed build is not retried on every call.
    """
    return LIBRARY.load(raise_errors)


def cached_bytes():
    """Bytes the kernels of this process keep allocated between calls (per-thread band buffers, padded label
    maps, gradient planes), which a resident-set reading taken after warm-up cannot see; 0 when the kernel is
    unavailable."""
    module = load_kernel()
    return 0 if module is None else int(module.affinity_field_cached_bytes())


def _reset_for_tests():
    """Forgets the load outcome so a test can simulate a failing or succeeding build."""
    LIBRARY.reset_for_tests()


@tf.RegisterGradient('AffinityFieldSums')
def _affinity_field_sums_grad(op, grad_sums, _grad_edge_counts, _grad_not_edge_counts, _grad_logs):
    """Gradient w.r.t. probs (logits with from_logits) of the per-class sums (labels get none); reuses the
    forward's logs when stashed."""
    grad_input = load_kernel(raise_errors=True).affinity_field_sums_grad(
        op.inputs[0], op.inputs[1], grad_sums, op.outputs[3], sizes=op.get_attr('sizes'),
        kld_margin=op.get_attr('kld_margin'), from_logits=op.get_attr('from_logits'))
    return None, grad_input


def affinity_field_class_sums(labels, probs, kld_margin, sizes, stash_logs=False, logits=None):
    """Per-centre-class sums and counts of the affinity-field terms (the kernel's forward).

    Args:
      labels: [N, H, W] int32; values outside [0, C) are ignored.
      probs: [N, H, W, C] float32.
      kld_margin: margin of the edge hinge.
      sizes: tuple of positive neighbour distances (S of them).
      stash_logs: keep log P~ and log (1-P)~ ([N, H, W, 2, C] float32, alive until the gradient is taken) so
        that the gradient does not compute them again. Off by default: since the logs are computed a whole
        image row at a time, writing and re-reading the stash costs the forward more (~3 ms at
        [16, 60, 60, 21], one thread) than it saves the gradient (~1 ms), and it holds N*H*W*2*C floats.
      logits: optional [N, H, W, C] float32 with probs = tf.nn.softmax(logits). Then the kernels read the
        logits and take their softmax themselves (probs is not read: in a graph, TensorFlow's softmax is pruned
        when nothing else uses it), and the sums are differentiable w.r.t. the logits, the gradient op applying
        the softmax's Jacobian (instead of TensorFlow's softmax and its four elementwise gradient ops over
        [N, H, W, C]). Incompatible with stash_logs, which is then ignored.
    Returns:
      (class_sums [C, 2S] float32 -- edge sums in columns :S, non-edge sums in S:, edge_counts [S] int32,
      not_edge_counts [S] int32). Differentiable w.r.t. probs (or, given, the logits).
    Raises:
      KernelUnavailableError: the kernel could not be built or loaded.
    """
    from_logits = logits is not None
    class_sums, edge_counts, not_edge_counts, _ = load_kernel(raise_errors=True).affinity_field_sums(
        labels, logits if from_logits else probs, sizes=list(sizes), kld_margin=float(kld_margin),
        stash_logs=bool(stash_logs) and not from_logits, from_logits=from_logits)
    return class_sums, edge_counts, not_edge_counts
