import numpy as np
import pytest
import tensorflow as tf

from a2gnn.graph import adjacency, generate_aff, generate_aff_cropping, neighbour_graph, node_features
from a2gnn.infer import infer_nocrf
from a2gnn.model import A2GNN, dense_attention, window_attention
from common.models.naming import original_names


def _golden_model(ins, args):
    model = A2GNN(args['nfeat'], args['nhid'], args['nclass'], args['nlayers'], args['dropout_rate'])
    names = original_names(model.weights)
    names['embeddinglayer.weight'].assign(ins['W_e'])
    names['outputlayer.weight'].assign(ins['W_o'])
    for i in range(3):
        names[f'attentionlayers.{i}.beta'].assign(ins['betas'][i:i + 1])
    return model


def test_forward_and_gradients_match_golden(a2g, check_output):
    ins, outs, case = a2g('a2g_gnn_forward')
    args = case['args']
    f_h, f_w, radius = args['f_h'], args['f_w'], args['radius']
    model = _golden_model(ins, args)
    x = node_features(ins['features'])
    adj = adjacency(generate_aff(f_h, f_w, ins['aff'], radius))
    wm = generate_aff_cropping(f_h, f_w, radius)
    check_output(case, outs, 'X', x)
    check_output(case, outs, 'adj', adj)
    check_output(case, outs, 'Wm', wm)
    with tf.GradientTape() as tape:
        logits, fts = model(x, adj, wm, training=False)
        objective = tf.reduce_sum(logits * ins['cotangent'])
    check_output(case, outs, 'logits', logits)
    check_output(case, outs, 'fts', fts)
    check_output(case, outs, 'pred', infer_nocrf(model, x, adj, f_h, f_w, wm))
    grads = tape.gradient(objective, [model.embedding, *model.betas, model.output_weight])
    check_output(case, outs, 'grad_W_e', grads[0])
    check_output(case, outs, 'grad_betas', tf.concat(grads[1:4], 0))
    check_output(case, outs, 'grad_W_o', grads[4])


def test_sparse_graph_forward_and_gradients_equal_dense(a2g):
    ins, outs, case = a2g('a2g_gnn_forward')
    args = case['args']
    model = _golden_model(ins, args)
    x = node_features(ins['features'])
    graph = neighbour_graph(ins['aff'], args['radius'])
    with tf.GradientTape() as tape:
        logits, fts = model(x, graph, training=False)
        objective = tf.reduce_sum(logits * ins['cotangent'])
    np.testing.assert_allclose(logits.numpy(), outs['logits'], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fts.numpy(), outs['fts'], rtol=1e-4, atol=1e-5)
    grads = tape.gradient(objective, [model.embedding, *model.betas, model.output_weight])
    np.testing.assert_allclose(grads[0].numpy(), outs['grad_W_e'], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tf.concat(grads[1:4], 0).numpy(), outs['grad_betas'], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grads[4].numpy(), outs['grad_W_o'], rtol=1e-4, atol=1e-5)


def test_dropout_only_in_training():
    model = A2GNN(8, 16, 21, 3, 0.5, seed=1)
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(size=(12, 8))).astype(np.float32)
    graph = neighbour_graph(np.ones((3, 4, 3, 3), np.float32), 1)
    eval_a = model(x, graph)[0].numpy()
    np.testing.assert_array_equal(eval_a, model(x, graph)[0].numpy())
    assert not np.allclose(model(x, graph, training=True)[0].numpy(), eval_a)


@pytest.mark.parametrize('f_h, f_w, radius, chunk', [(19, 13, 3, 8), (19, 13, 3, 2), (9, 17, 4, 1), (5, 4, 1, 8)])
def test_window_attention_equals_dense_across_tiles(f_h, f_w, radius, chunk):
    # Grids spanning several TILE x TILE (6 x 6) query blocks with partial edge blocks, processed in one or several chunks
    # (the backward pass recomputes chunk by chunk): values and gradients equal the dense layer (the test
    # oracle), including the cos < 0 mask (signed features here).
    rng = np.random.default_rng(f_h)
    d = 2 * radius + 1
    aff = np.exp(-np.abs(rng.normal(size=(f_h, f_w, d, d)))).astype(np.float32)
    graph = neighbour_graph(aff, radius)
    adj, cropping = graph.to_dense()
    h = tf.constant(rng.normal(size=(f_h * f_w, 6)).astype(np.float32))
    beta = tf.constant(0.7)
    cotangent = rng.normal(size=(f_h * f_w, 6)).astype(np.float32)
    outs, grads = [], []
    for layer in (lambda h, b: window_attention(h, b, graph, chunk=chunk, impl='tf'),
                  lambda h, b: dense_attention(h, b, adj, cropping)):
        with tf.GradientTape() as tape:
            tape.watch([h, beta])
            out = layer(h, beta)
            objective = tf.reduce_sum(out * cotangent)
        outs.append(out.numpy())
        grads.append([g.numpy() for g in tape.gradient(objective, [h, beta])])
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grads[0][0], grads[1][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-5)
