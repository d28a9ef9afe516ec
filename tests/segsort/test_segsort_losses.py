"""segsort.losses: values and gradients against the original (golden), NumPy references and NaN safety."""
import shutil

import numpy as np
import pytest
import tensorflow as tf

from segsort import losses


def _loss_and_grad(fn, embedding, *args, **kwargs):
    embedding = tf.constant(embedding)
    with tf.GradientTape() as tape:
        tape.watch(embedding)
        loss = fn(embedding, *args, **kwargs)
    return loss.numpy(), tape.gradient(loss, embedding).numpy()


@pytest.mark.parametrize('impl', ['tf', 'kernel'])
def test_add_segsort_loss_golden(golden, assert_golden, impl):
    if impl == 'kernel' and shutil.which('g++') is None:
        pytest.skip('the kernel is built with g++')
    ins, outs, case = golden('segsort_add_segsort_loss')
    s = case['scalars']
    loss, grad = _loss_and_grad(
        lambda e: losses.add_segsort_loss(e, ins['labels'], s['embedding_dim'], s['ignore_label'],
                                          s['concentration'], ins['cluster_labels'], s['num_clusters'],
                                          s['kmeans_iterations'], s['num_banks'], ins['loc_features'], impl=impl),
        ins['embedding'])
    assert_golden(loss, outs['loss'], case['tolerance']['out_loss'])
    assert_golden(grad, outs['grad_embedding'], case['tolerance']['out_grad_embedding'])


def test_add_unsupervised_segsort_loss_golden(golden, assert_golden):
    ins, outs, case = golden('segsort_add_unsupervised_segsort_loss')
    loss, grad = _loss_and_grad(
        lambda e: losses.add_unsupervised_segsort_loss(e, case['scalars']['concentration'], ins['cluster_labels']),
        ins['embedding'])
    assert_golden(loss, outs['loss'], case['tolerance']['out_loss'])
    assert_golden(grad, outs['grad_embedding'], case['tolerance']['out_grad_embedding'])


def _literal_nca(embedding, semantic, segment_ids, prototype_labels, kappa, memory=None, memory_labels=None):
    """NumPy transcription of the original's `_calculate_vmf_loss` + `_calculate_log_likelihood` (dense masks)."""
    num_segments = len(prototype_labels)
    sums = np.zeros([num_segments, embedding.shape[1]])
    np.add.at(sums, segment_ids, embedding)
    protos = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    labels = np.asarray(prototype_labels)
    if memory is not None:
        protos = np.concatenate([protos, memory / np.linalg.norm(memory, axis=1, keepdims=True)])
        labels = np.concatenate([labels, memory_labels])
    sims = np.exp(kappa * embedding @ protos.T)
    own = sims[np.arange(len(semantic)), segment_ids]
    same = semantic[:, None] == labels[None, :]
    others = (sims * same).sum(1) - own
    numerator = np.where(others > 0, others, own)
    denominator = (sims * ~same).sum(1) + numerator
    return np.mean(-np.log(numerator / denominator))


@pytest.mark.parametrize('memory_kind', ['inert', 'mixed'])
@pytest.mark.parametrize('graph', [False, True], ids=['eager', 'tf.function'])
def test_segment_loss_with_memory_matches_numpy_and_gradient_matches_autodiff(memory_kind, graph):
    # inert: every memory label 0 (the one-class shortcut); mixed: FIFO-like labels, one (5) that no pixel has.
    # float64: in float32 the two orders of summation differ by ~1e-3 relative in a few gradient entries.
    rng = np.random.default_rng(0)
    n, d = 60, 6
    emb = rng.normal(size=[n, d])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    semantic = rng.integers(0, 3, size=n).astype(np.int32)
    semantic[:4] = 7  # class 7: one segment only -> own-segment fallback of the NCA numerator
    clusters = rng.integers(0, 4, size=n)
    clusters[:4] = 9
    from segsort.clustering import prepare_prototype_labels
    ids, proto_labels = (t.numpy() for t in prepare_prototype_labels(semantic, clusters))
    memory = rng.normal(size=[10, d])
    memory_labels = (np.zeros(10, np.int32) if memory_kind == 'inert'
                     else np.array([0, 1, 2, 7, 5, 5, 1, 0, 2, 1], np.int32))
    memory_unit = memory / np.linalg.norm(memory, axis=1, keepdims=True)
    e = tf.constant(emb)

    def fused_loss_and_grad(e):
        with tf.GradientTape() as tape:
            tape.watch(e)
            loss, _ = losses.segment_loss(e, semantic, ids, proto_labels, 10.0, memory_unit, memory_labels)
        return loss, tape.gradient(loss, e)

    fused, fused_grad = (tf.function(fused_loss_and_grad) if graph else fused_loss_and_grad)(e)
    with tf.GradientTape() as tape:
        tape.watch(e)
        # Autodiff reference of the same maths with dense masks.
        protos = tf.math.l2_normalize(tf.math.unsorted_segment_sum(e, ids, len(proto_labels)), axis=1)
        protos = tf.concat([protos, memory_unit], 0)
        labels = np.concatenate([proto_labels, memory_labels])
        sims = tf.exp(10.0 * tf.matmul(e, protos, transpose_b=True))
        same = tf.constant(semantic[:, None] == labels[None, :], tf.float64)
        own = tf.gather(sims, ids, axis=1, batch_dims=1)
        others = tf.reduce_sum(sims * same, 1) - own
        numerator = tf.where(others > 0, others, own)
        reference = tf.reduce_mean(-tf.math.log(numerator / (tf.reduce_sum(sims * (1 - same), 1) + numerator)))
    np.testing.assert_allclose(fused.numpy(), _literal_nca(emb, semantic, ids, proto_labels, 10.0, memory,
                                                           memory_labels), rtol=1e-5)
    np.testing.assert_allclose(fused_grad.numpy(), tape.gradient(reference, e).numpy(),
                               rtol=1e-9, atol=1e-12)


def test_segsort_loss_is_finite_with_empty_clusters_and_zero_without_valid_pixels():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=[2, 4, 4, 8]).astype(np.float32)
    labels = np.zeros([2, 4, 4, 1], np.int32)
    labels[0, :2] = 1
    labels[1] = 255  # image 1: no valid pixel
    clusters = np.zeros([2, 4, 4, 1], np.int32)  # 25 k-means clusters, only id 0 used: 24 NaN prototypes
    loc = np.zeros([2, 4, 4, 2], np.float32)
    loss, grad = _loss_and_grad(lambda e: losses.add_segsort_loss(e, labels, 8, 255, 10.0, clusters, 5, 10, 0, loc),
                                emb)
    assert np.isfinite(loss) and np.isfinite(grad).all() and loss > 0
    assert not grad[1].any()
    all_void = np.full_like(labels, 255)
    loss, grad = _loss_and_grad(
        lambda e: losses.add_segsort_loss(e, all_void, 8, 255, 10.0, clusters, 5, 10, 0, loc), emb)
    assert loss == 0.0 and np.isfinite(grad).all()


def test_memory_bank_inert_by_default_fifo_on_request():
    inert = losses.MemoryBank(2, 6, 4, fifo=False, seed=0)
    before = [v.numpy().copy() for v in inert.all_variables]
    fifo = losses.MemoryBank(2, 6, 4, fifo=True, seed=0)
    rng = np.random.default_rng(2)
    args = (rng.normal(size=[1, 4, 4, 4]).astype(np.float32), rng.integers(1, 3, size=[1, 4, 4, 1]).astype(np.int32),
            4, 255, 10.0, np.zeros([1, 4, 4, 1], np.int32), 2, 3, 2, np.zeros([1, 4, 4, 2], np.float32))
    loss_inert = losses.add_segsort_loss(*args, memory_bank=inert)
    for b, v in zip(before, inert.all_variables):
        np.testing.assert_array_equal(v.numpy(), b)
    # The inert memory: random unit rows labelled 0, all part of the loss's denominator.
    assert np.isfinite(loss_inert.numpy())
    old_newest = fifo.memory[1].numpy().copy()
    losses.add_segsort_loss(*args, memory_bank=fifo)
    np.testing.assert_array_equal(fifo.memory[0].numpy(), old_newest)  # banks shifted
    labels = fifo.memory_labels[1].numpy()
    assert set(labels[labels > 0]) <= {1, 2} and (labels > 0).any()  # newest bank holds this batch's segments
    with pytest.raises(ValueError, match='memory_bank'):
        losses.add_segsort_loss(*args)
