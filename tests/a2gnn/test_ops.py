import numpy as np
import pytest

from a2gnn.ops import unfold


@pytest.mark.parametrize('name', ['a2g_unfold_r3', 'a2g_unfold_r4'])
def test_unfold_matches_golden(a2g, check_output, name):
    ins, outs, case = a2g(name)
    check_output(case, outs, 'out', unfold(ins['x'], case['args']['radius']))


def test_unfold_keeps_integer_dtype_and_zero_pads():
    x = np.arange(12, dtype=np.int64).reshape(1, 3, 4, 1) + 1
    out = unfold(x, 1).numpy()
    assert out.dtype == np.int64
    assert out[0, 0, 0, 0, 0, 0] == 0 and out[0, 1, 1, 0, 0, 0] == x[0, 0, 0, 0]
