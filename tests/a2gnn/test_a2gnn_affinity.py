import numpy as np
import pytest

from a2gnn.affinity import gated_affinity


@pytest.mark.parametrize('name', ['a2g_gated_aff_head_r3', 'a2g_gated_aff_head_r4'])
def test_gated_affinity_matches_golden(a2g, check_output, name):
    ins, outs, case = a2g(name)
    aff, aff_crf = gated_affinity(ins['f9'], case['args']['radius'])
    check_output(case, outs, 'aff', aff)
    check_output(case, outs, 'aff_crf', aff_crf)
