"""segsort.losses: values and gradients against the original (golden), NumPy references and NaN safety."""
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


def test_add_segsort_loss_golden(golden, assert_golden):
    ins, outs, case = golden('segsort_add_segsort_loss')
    s = case['scalars']
    loss, grad = _loss_and_grad(
        lambda e: losses.add_segsort_loss(e, ins['labels'], s['embedding_dim'], s['ignore_label'],
                                          s['concentration'], ins['cluster_labels'], s['num_clusters'],
                                          s['kmeans_iterations'], s['num_banks'], ins['loc_features']),
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
