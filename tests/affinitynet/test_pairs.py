import numpy as np
import pytest

from affinitynet import pairs

PAIR_CASES = [f'psa_pairs_r{r}_{s}' for r in (3, 4, 5) for s in ('56x56', '9x13', '3x4')]


@pytest.mark.parametrize('name', PAIR_CASES)
def test_get_indices_of_pairs_golden(golden, name):
    ins, outs, case = golden(name, 'psa_a2gnn')
    ind_from, ind_to = pairs.get_indices_of_pairs(case['args']['radius'], tuple(case['args']['size']))
    np.testing.assert_array_equal(ind_from, outs['ind_from'])
    np.testing.assert_array_equal(ind_to, outs['ind_to'])
    assert len(ind_to) == len(ind_from) * case['args']['num_directions']


def test_spec_worked_example():
    ind_from, ind_to = pairs.get_indices_of_pairs(2, (3, 4))
    assert ind_from.tolist() == [1, 2, 5, 6]
    assert ind_to.tolist() == [2, 3, 6, 7, 4, 5, 8, 9, 5, 6, 9, 10, 6, 7, 10, 11]


@pytest.mark.parametrize('name', ['psa_indices_in_radius_r5_9x13', 'psa_indices_in_radius_r4_12x15'])
def test_get_indices_in_radius_golden(golden, name):
    _, outs, case = golden(name, 'psa_a2gnn')
    a = case['args']
    np.testing.assert_array_equal(pairs.get_indices_in_radius(a['height'], a['width'], a['radius']),
                                  outs['from_to'])


@pytest.mark.parametrize('name', ['psa_extract_aff_label_cs12_r5', 'psa_extract_aff_label_cs56_r5',
                                  'psa_extract_aff_label_cs12_r3', 'psa_extract_aff_label_cs56_r3'])
def test_extract_affinity_labels_golden(golden, name):
    ins, outs, case = golden(name, 'psa_a2gnn')
    bg, fg, neg = pairs.extract_affinity_labels(ins['label'], case['args']['cropsize'], case['args']['radius'])
    for got, key in ((bg, 'bg'), (fg, 'fg'), (neg, 'neg')):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, outs[key])


def test_extract_affinity_labels_worked_example():
    label = np.array([[0, 1, 1, 255], [0, 0, 1, 2], [255, 0, 2, 2], [0, 0, 0, 1]], np.uint8)
    bg, fg, neg = pairs.extract_affinity_labels(label, 4, 2)
    assert bg.tolist() == [[0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0], [0, 0, 1, 0, 1, 0], [0, 0, 0, 0, 1, 0]]
    assert neg.tolist() == [[0, 0, 1, 1, 1, 0], [1, 1, 0, 1, 0, 1], [1, 0, 0, 1, 0, 1], [0, 1, 1, 1, 0, 1]]
    assert fg[0].tolist() == [1, 0, 0, 0, 0, 1]
