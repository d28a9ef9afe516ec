import numpy as np

from affinitynet import data


def test_affinity_label_from_crf_golden(golden):
    ins, outs, case = golden('psa_aff_label_from_crf_cs96', 'psa_a2gnn')
    result = data.affinity_label_from_crf(ins['la'], ins['ha'], case['args']['radius'])
    np.testing.assert_allclose(result['pooled'], outs['pooled'], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(result['label'], outs['label'])
    for key in ('bg', 'fg', 'neg'):
        np.testing.assert_array_equal(result[key], outs[key])


def test_affinity_label_from_crf_accepts_dicts(golden):
    ins, outs, case = golden('psa_aff_label_from_crf_cs96', 'psa_a2gnn')
    keys = case['args']['dict_keys']
    la = {k: ins['la'][..., i] for i, k in enumerate(keys)}
    ha = {k: ins['ha'][..., i] for i, k in enumerate(keys)}
    np.testing.assert_array_equal(data.affinity_label_from_crf(la, ha, 5)['label'], outs['label'])


def test_label_rule_ha_background_overrides_and_padding_ignored():
    # pooled la|ha with k=1: block 0 la-fg & ha-bg -> 0; block 1 la-fg & ha-fg -> 1; block 2 la-bg -> 255;
    # block 3 all zero -> 255
    pooled = np.array([[[0.2, 0.8, 0.9, 0.1], [0.2, 0.8, 0.3, 0.7]],
                       [[0.9, 0.1, 0.1, 0.9], [0, 0, 0, 0]]], np.float32)
    assert data.label_from_pooled(pooled).tolist() == [[0, 1], [255, 255]]
