import numpy as np
import tensorflow as tf

from a2gnn.graph import adjacency, generate_aff, generate_aff_cropping, neighbour_graph, node_features
from a2gnn.infer import infer_nocrf
from a2gnn.model import A2GNN
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
