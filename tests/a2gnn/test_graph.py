import numpy as np
import pytest

from a2gnn.graph import adjacency, generate_aff, generate_aff_cropping, neighbour_graph, node_features


@pytest.mark.parametrize('name', ['a2g_generate_aff_7x9_r3', 'a2g_generate_aff_7x9_r4'])
def test_dense_graph_matches_golden(a2g, check_output, name):
    ins, outs, case = a2g(name)
    f_h, f_w, radius = case['args']['f_h'], case['args']['f_w'], case['args']['radius']
    aff_dense = generate_aff(f_h, f_w, ins['aff'], radius)
    check_output(case, outs, 'aff_dense', aff_dense)
    check_output(case, outs, 'aff_cropping', generate_aff_cropping(f_h, f_w, radius))
    check_output(case, outs, 'adj', adjacency(aff_dense))


@pytest.mark.parametrize('name', ['a2g_generate_aff_7x9_r3', 'a2g_generate_aff_7x9_r4'])
def test_neighbour_graph_is_the_dense_graph(a2g, name):
    ins, outs, case = a2g(name)
    graph = neighbour_graph(ins['aff'], case['args']['radius'])
    adj, cropping = graph.to_dense()
    np.testing.assert_array_equal(adj, outs['adj'])
    np.testing.assert_array_equal(cropping, outs['aff_cropping'])


def test_node_features_l1_rows_and_zero_node():
    features = np.abs(np.random.default_rng(0).normal(size=(1, 2, 3, 5))).astype(np.float32)
    features[0, 1, 2] = 0
    x = node_features(features).numpy()
    np.testing.assert_allclose(x[:5].sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(x[1], features[0, 0, 1] / features[0, 0, 1].sum(), rtol=1e-6)
    assert not x[5].any() and np.all(np.isfinite(x))
