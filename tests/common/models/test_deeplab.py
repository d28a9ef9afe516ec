"""DeepLab-v2 ASPP builder: golden parity with the original and variable names outside block5 (Q-A20)."""
from common.models.deeplab import build_deeplab
from common.models.naming import original_name
from test_resnet_v1 import restore_golden_checkpoint


def test_deeplab_small_matches_original(golden, assert_golden):
    ins, outs, case = golden('deeplab_small')
    s = case['scalars']
    backbone = dict(filters=s['filters'], num_blocks=s['num_blocks'], strides=s['strides'],
                    dilations=s['dilations'], name=s['scope'])
    model = build_deeplab(s['num_classes'], backbone=backbone, use_global_status=s['use_global_status'],
                          aspp_dilations=s['aspp_dilations'], return_endpoints=True)
    variables = restore_golden_checkpoint(model, outs, s)
    aspp_names = [original_name(v) for v in variables if '/fc1_c' in original_name(v)]
    assert len(aspp_names) == 8 and not any('block5' in n for n in aspp_names)

    got = model(ins['image'], training=False)
    tol = case['tolerance']
    assert tuple(got['logits'].shape[1:3]) == tuple(s['feature_hw'])
    assert_golden(got['logits'], outs['logits'], tol['out_logits'])
    assert_golden(got['backbone'], outs['debug_backbone'], tol['out_debug_backbone'])
    for i in range(4):
        assert_golden(got[f'aspp{i}'], outs[f'debug_aspp{i}'], tol[f'out_debug_aspp{i}'])
