"""DeepLab-v2 ASPP builder: golden parity with the original and variable names outside block5 (Q-A20)."""
import pathlib

from common.models.deeplab import build_deeplab
from common.models.naming import in_original_order, original_name
from common.weights.slim import load_slim_checkpoint

GOLDEN = pathlib.Path(__file__).parents[2] / 'golden' / 'aaf_segsort'


def test_deeplab_small_matches_original(golden, assert_golden):
    ins, outs, case = golden('deeplab_small')
    s = case['scalars']
    backbone = dict(filters=s['filters'], num_blocks=s['num_blocks'], strides=s['strides'],
                    dilations=s['dilations'], name=s['scope'])
    model = build_deeplab(s['num_classes'], backbone=backbone, use_global_status=s['use_global_status'],
                          aspp_dilations=s['aspp_dilations'], return_endpoints=True)
    restored, missing, unexpected = load_slim_checkpoint(model, GOLDEN / s['checkpoint'])
    assert (len(restored), missing, unexpected) == (len(outs['var_names']), [], [])
    variables = in_original_order(model.variables)
    assert [original_name(v) for v in variables] == [str(n) for n in outs['var_names']]
    assert [tuple(v.shape) for v in variables] == [
        tuple(int(d) for d in row[:nd]) for row, nd in zip(outs['var_shapes'], outs['var_ndims'])]
    aspp_names = [original_name(v) for v in variables if '/fc1_c' in original_name(v)]
    assert len(aspp_names) == 8 and not any('block5' in n for n in aspp_names)

    got = model(ins['image'], training=False)
    tol = case['tolerance']
    assert tuple(got['logits'].shape[1:3]) == tuple(s['feature_hw'])
    assert_golden(got['logits'], outs['logits'], tol['out_logits'])
    assert_golden(got['backbone'], outs['debug_backbone'], tol['out_debug_backbone'])
    for i in range(4):
        assert_golden(got[f'aspp{i}'], outs[f'debug_aspp{i}'], tol[f'out_debug_aspp{i}'])
