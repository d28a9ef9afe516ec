"""Golden-case helpers for the A2GNN tests (cases a2g_* of tests/golden/psa_a2gnn)."""
import numpy as np
import pytest


def _tolerance(case, key):
    tolerance = case['tolerance']
    return tolerance.get('out_' + key, tolerance['default'])


def check_output(case, outs, key, actual):
    """Compares output `key` with the golden under the case's tolerance (numeric entries only)."""
    expected = outs[key]
    actual = np.asarray(actual)
    if actual.size == expected.size and actual.shape != expected.shape:
        actual = actual.reshape(expected.shape)
    tolerance = _tolerance(case, key)
    if expected.dtype.kind in 'biu':
        np.testing.assert_array_equal(actual.astype(expected.dtype), expected, err_msg=key)
    else:
        np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64), rtol=tolerance['rtol'],
                                   atol=tolerance['atol'], err_msg=key)


@pytest.fixture
def a2g(golden, golden_dir):
    """`a2g(name)` -> (inputs, outputs, case) of a golden case in tests/golden/psa_a2gnn."""
    def load(name):
        ins, outs, case = golden(name, folder='psa_a2gnn')
        stored = np.load(golden_dir / 'psa_a2gnn' / case['file'])
        if 'out' in stored.files:  # a case's single output is stored as `out` (no suffix)
            outs['out'] = stored['out']
        return ins, outs, case
    return load


@pytest.fixture(name='check_output')
def check_output_fixture():
    return check_output
