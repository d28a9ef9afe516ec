"""Compiled CPU kernels of the supervised SegSort loss (`kernels/segsort_loss.cc`), built on first use.

* `nca_loss`: prototypes (normalised segment sums) and the NCA vMF likelihood of `segsort.losses.segment_loss` in
  one op that also returns the gradient w.r.t. the embedding (for an upstream gradient of 1, through the prototypes
  too): blocks of pixels against all prototypes, the similarities of a block kept in cache, a polynomial exp,
  multi-threaded on TensorFlow's CPU thread pool; no [pixels x prototypes] tensor; pixels with segment -1 left out,
  so that it takes a batch's whole grid. Registered gradient: that output scaled by the upstream gradient.
* `batch_kmeans`: `segsort.clustering.batch_kmeans_with_initial_labels` (images in parallel).

Built with `common.ops.kernel_build.OpLibrary` (g++, `tf.sysconfig` flags, AVX-512 where the CPU has it, cache
shared with the AAF kernel). CPU and float32 only: `resolve_impl` picks the TensorFlow path on a GPU, inside an
XLA-compiled function, under MultiWorkerMirroredStrategy (see `_multi_worker`), for other dtypes, and (after one
log line) when the library cannot be built or loaded.
"""
import logging
import os

import tensorflow as tf

from common.ops.kernel_build import KernelUnavailableError, OpLibrary, vector_flags

IMPLEMENTATIONS = ('auto', 'kernel', 'tf')
MAX_DIM = 128  # embedding / feature dims the kernels support

LIBRARY = OpLibrary('segsort_loss', os.path.join(os.path.dirname(os.path.abspath(__file__)), 'kernels',
                                                 'segsort_loss.cc'), vector_flags(avx512=True))
_logger = logging.getLogger(__name__)

__all__ = ['IMPLEMENTATIONS', 'KernelUnavailableError', 'LIBRARY', 'batch_kmeans', 'nca_loss', 'resolve_impl']


def _multi_worker():
    """True under MultiWorkerMirroredStrategy: there the kernels' training drifted from the single process (weights
    up to 1e-3 apart after 5 steps, tests/common/train/test_multi_worker.py; unexplained, while 2 in-process
    replicas equal 1 device), so `auto` keeps the TF ops there until that is understood."""
    return isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy)


@tf.autograph.experimental.do_not_convert
def resolve_impl(impl, dtype=tf.float32, dim=None):
    """'kernel' or 'tf' for `impl` in IMPLEMENTATIONS ('auto': the kernel on CPU for float32 when it loads).

    Args:
      impl: 'auto', 'kernel' or 'tf'.
      dtype: dtype of the embedding (the kernels are float32 only).
      dim: feature dimension (the kernels support up to MAX_DIM), None if unknown.
    Raises:
      ValueError: unknown impl, or impl='kernel' for inputs the kernel does not support.
      KernelUnavailableError: impl='kernel' and the library cannot be built or loaded.
    """
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f'segsort loss: impl must be one of {IMPLEMENTATIONS}, got {impl!r}')
    if impl == 'tf':
        return 'tf'
    supported = tf.as_dtype(dtype) == tf.float32 and (dim is None or dim <= MAX_DIM)
    if impl == 'kernel':
        if not supported:
            raise ValueError(f'segsort loss: impl=kernel needs float32 features of dim <= {MAX_DIM}, got '
                             f'{tf.as_dtype(dtype).name} dim {dim}')
        LIBRARY.load(raise_errors=True)
        return 'kernel'
    if not supported or _multi_worker():
        return 'tf'
    if LIBRARY.serves_auto(_logger, 'SegSort C++ kernel unavailable (%s); using the TensorFlow ops'):
        return 'kernel'
    return 'tf'


@tf.RegisterGradient('SegsortNcaLoss')
def _nca_loss_grad(op, upstream, _grad_embedding, _grad_prototypes):
    """The forward's gradient scaled by the upstream gradient; none for ids, classes, memory, kappa, and none
    through the prototypes output (the op's own gradient already goes through the prototypes)."""
    return (upstream * op.outputs[1],) + (None,) * 5


tf.no_gradient('SegsortBatchKmeans')


def nca_loss(embedding, segment_ids, prototype_class, memory, memory_class, concentration,
             normalize_embedding=False):
    """Mean NCA negative log-likelihood (the kernel of `segsort.losses.segment_loss`), prototypes included.

    Args:
      embedding: float32 [N, D] unit rows.
      segment_ids: int32 [N] segment of every pixel in [0, S); -1 leaves a pixel out (no loss, zero gradient).
      prototype_class: int32 [S] compact class of every segment.
      memory: float32 [M, D] extra prototypes (M may be 0; no gradient).
      memory_class: int32 [M] their compact classes.
      concentration: kappa.
      normalize_embedding: the rows are raw: normalise them first (the gradient is w.r.t. the raw rows).
    Returns:
      (loss scalar float32, mean over the counted pixels (NaN if none, as a mean of nothing), differentiable
       w.r.t. embedding, also through the prototypes; prototypes [S, D] float32, the normalised segment sums, an
       output without gradient).
    Raises:
      KernelUnavailableError: the library cannot be built or loaded.
    """
    module = LIBRARY.load(raise_errors=True)
    loss, _, prototypes = module.segsort_nca_loss(
        embedding, tf.cast(segment_ids, tf.int32), tf.cast(prototype_class, tf.int32), memory,
        tf.cast(memory_class, tf.int32), tf.cast(concentration, tf.float32),
        normalize_embedding=bool(normalize_embedding))
    return loss, tf.stop_gradient(prototypes)


def batch_kmeans(embedding, initial_labels, num_clusters, iterations, valid, locations=None,
                 normalize_embedding=False):
    """`segsort.clustering.batch_kmeans_with_initial_labels` on the CPU kernel, features built in the op.

    Args:
      embedding: float32 [B, P, D] (unit rows, or raw with normalize_embedding).
      initial_labels: int [B, P] in [0, num_clusters) (checked on valid pixels).
      num_clusters: clusters per image (int).
      iterations: M/E iterations (int).
      valid: bool [B, P].
      locations: optional float32 [B, P, L] appended to the (unit) embedding; the features are
        normalise([embedding, locations]), as `add_segsort_loss` builds them.
      normalize_embedding: normalise the embedding rows before appending the locations.
    Returns:
      int64 [B, P] (invalid pixels: their initial label).
    """
    module = LIBRARY.load(raise_errors=True)
    embedding = tf.stop_gradient(embedding)
    if locations is None:
        locations = tf.zeros(tf.concat([tf.shape(embedding)[:2], [0]], 0), embedding.dtype)
    return module.segsort_batch_kmeans(embedding, tf.cast(locations, embedding.dtype),
                                       tf.cast(initial_labels, tf.int32), valid, num_clusters=int(num_clusters),
                                       iterations=int(iterations), normalize_embedding=bool(normalize_embedding))
