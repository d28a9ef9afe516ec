import numpy as np
import pytest

from a2gnn.seeds import confident_seeds, normalize_seam_cams

SEED_KEYS = ('crf_label', 'ori_crf_label', 'crf_la', 'crf_ha', 'crf_la_input', 'crf_ha_input', 'cam_img',
             'cam_sure_region')


def test_seam_normalisation_matches_golden(a2g, check_output):
    ins, outs, case = a2g('a2g_seam_cam_norm')
    cams = [ins[f'cam_rv_{i}'] for i in range(8)]
    result = normalize_seam_cams(cams, ins['label'], tuple(case['args']['image_size']), case['args']['cam_pred_bg'])
    for key in ('sum_cam', 'norm_cam', 'cam_np', 'cam_keys'):
        check_output(case, outs, key, result[key])
    # Exact except near ties (top-2 gap < 1e-5) of the argmax.
    scores = np.sort(np.concatenate([np.full(result['norm_cam'].shape[:2] + (1,), 0.26), result['norm_cam']], -1), -1)
    tie = scores[..., -1] - scores[..., -2] < 1e-5
    assert np.array_equal(result['cam_pred'][~tie], outs['cam_pred'][~tie])
    assert np.all(result['norm_cam'][..., np.setdiff1d(np.arange(20), result['cam_keys'])] == -1)


@pytest.mark.parametrize('name', ['a2g_seam_seeds', 'a2g_seam_seeds_realcrf'])
def test_confident_seeds_match_golden(a2g, check_output, name):
    ins, outs, case = a2g(name)
    given = {'crf_la': ins['crf_la_raw'], 'crf_ha': ins['crf_ha_raw']} if 'crf_la_raw' in ins else {}
    result = confident_seeds(ins['cam_np'], ins['cam_keys'], ins['img'], **given)
    for key in SEED_KEYS:
        check_output(case, outs, key, result[key])
    labels = result['crf_label']
    assert set(np.unique(labels)) <= set([0, 255] + [k + 1 for k in ins['cam_keys'].tolist()])
