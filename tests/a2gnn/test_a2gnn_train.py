import numpy as np
import pytest
import tensorflow as tf

from a2gnn.train import (train_with_crf_loss, train_with_mp_crf_loss, train_with_mp_nocrf_loss,
                         train_with_nocrf_loss)


def _run(name, ins, args):
    f_h, f_w = args['f_h'], args['f_w']
    sample = {'rgb': ins['rgb']}
    if name == 'a2g_train_with_nocrf':
        return train_with_nocrf_loss(ins['x_t'], ins['seed'], f_h, f_w)
    if name == 'a2g_train_with_crf':
        return train_with_crf_loss(ins['x_t'], ins['seed'], f_h, f_w, sample)
    if name == 'a2g_train_with_mp_nocrf':
        return train_with_mp_nocrf_loss(ins['x_t'], ins['fts_t'], ins['seed'], f_h, f_w, ins['boxes'],
                                        ins['box_class'])
    return train_with_mp_crf_loss(ins['x_t'], ins['fts_t'], ins['seed'], f_h, f_w, sample, ins['boxes'],
                                  ins['box_class'])


@pytest.mark.parametrize('name', ['a2g_train_with_nocrf', 'a2g_train_with_crf', 'a2g_train_with_mp_nocrf',
                                  'a2g_train_with_mp_crf'])
def test_step_losses_match_golden(a2g, check_output, name):
    ins, outs, case = a2g(name)
    ins['x_t'], ins['fts_t'] = tf.constant(ins['x']), tf.constant(ins['fts'])
    with tf.GradientTape() as tape:
        tape.watch([ins['x_t'], ins['fts_t']])
        result = _run(name, ins, case['args'])
    for key, value in result.items():
        check_output(case, outs, key, value)
    grad_x, grad_fts = tape.gradient(result['loss'], [ins['x_t'], ins['fts_t']])
    check_output(case, outs, 'grad_x', grad_x)
    if 'grad_fts' in outs:
        check_output(case, outs, 'grad_fts', grad_fts)


@pytest.mark.parametrize('mode', ['others', 'box'])
def test_train_gnn_equals_the_step_by_step_original_loop(mode):
    # The trainer's single compiled step (phase 1 as phase 2 with the CRF weighted 0, the chunked split CE, the
    # fused relu-dropout, the XLA Adam update) against the original's loop written with the golden-checked
    # loss functions, eagerly, with the op-by-op TorchAdam: the same per-step losses (and the box seed edits).
    from a2gnn.graph import neighbour_graph
    from a2gnn.model import A2GNN
    from a2gnn.train import PHASE_LOSSES, potts_crf_terms, train_gnn
    from common.train.optimizers import TorchAdam
    f_h, f_w, radius, epochs = 9, 7, 2, 3
    rng = np.random.default_rng(3)
    x = np.abs(rng.normal(size=(f_h * f_w, 16))).astype(np.float32)
    x = tf.constant(x / x.sum(axis=1, keepdims=True))
    d = 2 * radius + 1
    graph = neighbour_graph(np.exp(-np.abs(rng.normal(size=(f_h, f_w, d, d)))).astype(np.float32), radius)
    seed0 = rng.choice([0, 3, 255], size=(1, 8 * f_h, 8 * f_w), p=[0.3, 0.3, 0.4]).astype(np.int64)
    sample = {'rgb': rng.normal(size=(1, f_h, f_w, 3)).astype(np.float32)}
    boxes, box_class = np.array([[3, 2, 30, 40], [20, 30, 50, 70]]), [3, 3]
    model = A2GNN(16, 8, 21, 3, 0.5, seed=0)
    optimizer = TorchAdam(weight_decay=5e-4)
    optimizer.build(model.weights)
    crf_terms = potts_crf_terms(sample, f_h, f_w)
    seed, expected = tf.constant(seed0), []
    for phase in PHASE_LOSSES[mode]:
        for _ in range(epochs):
            with tf.GradientTape() as tape:
                logits, fts = model(x, graph, training=True)
                if phase == 'nocrf':
                    out = train_with_nocrf_loss(logits, seed, f_h, f_w)
                elif phase == 'crf':
                    out = train_with_crf_loss(logits, seed, f_h, f_w, sample, crf_terms=crf_terms)
                elif phase == 'mp_nocrf':
                    out = train_with_mp_nocrf_loss(logits, fts, seed, f_h, f_w, boxes, box_class)
                else:
                    out = train_with_mp_crf_loss(logits, fts, seed, f_h, f_w, sample, boxes, box_class,
                                                 crf_terms=crf_terms)
            optimizer.apply_gradients(zip(tape.gradient(out['loss'], model.weights), model.weights), 0.03)
            seed = out.get('seed_after', seed)
            expected.append({k: float(v) for k, v in out.items() if np.ndim(v) == 0})
    trained, history = train_gnn(x, graph, seed0, f_h, f_w, mode, sample, boxes, box_class, epochs=epochs,
                                 hidden=8, log=lambda message: None)
    assert [sorted(h) for h in history] == [sorted(h) for h in expected]
    for got, want in zip(history, expected):
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=2e-5, atol=1e-6, err_msg=key)
    for got, want in zip(trained.weights, model.weights):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-6)


def test_train_gnn_on_the_dense_graph_equals_the_window_graph():
    # `--graph dense` (the original's N x N matrices) through the same trainer: the same per-step losses.
    from a2gnn.graph import neighbour_graph
    from a2gnn.train import train_gnn
    f_h, f_w, radius = 7, 8, 2
    rng = np.random.default_rng(5)
    x = np.abs(rng.normal(size=(f_h * f_w, 12))).astype(np.float32)
    x /= x.sum(axis=1, keepdims=True)
    d = 2 * radius + 1
    graph = neighbour_graph(np.exp(-np.abs(rng.normal(size=(f_h, f_w, d, d)))).astype(np.float32), radius)
    adj, cropping = graph.to_dense()
    seed = rng.choice([0, 5, 255], size=(1, 8 * f_h, 8 * f_w), p=[0.3, 0.3, 0.4]).astype(np.int64)
    sample = {'rgb': rng.normal(size=(1, f_h, f_w, 3)).astype(np.float32)}
    runs = [train_gnn(x, form, seed, f_h, f_w, 'others', sample, epochs=2, hidden=8, aff_cropping=cropping,
                      log=lambda message: None)[1] for form in (graph, adj)]
    assert [sorted(h) for h in runs[0]] == [sorted(h) for h in runs[1]]
    for window, dense in zip(*runs):
        for key in window:
            np.testing.assert_allclose(window[key], dense[key], rtol=1e-4, atol=1e-6, err_msg=key)
