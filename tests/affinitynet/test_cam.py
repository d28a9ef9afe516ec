import numpy as np
import pytest

from affinitynet import cam


def test_fuse_cams_golden(golden):
    ins, outs, case = golden('psa_cam_fusion', 'psa_a2gnn')
    result = cam.fuse_cams([ins[f'cam_{i}'] for i in range(8)], ins['label'], tuple(case['args']['image_size']),
                           case['args']['cam_pred_bg'])
    for key in ('sum_cam', 'norm_cam', 'cam_values'):
        np.testing.assert_allclose(result[key], outs[key], rtol=1e-5, atol=1e-5, err_msg=key)
    np.testing.assert_array_equal(result['cam_keys'], outs['cam_keys'])
    scores = np.concatenate([np.full(outs['norm_cam'].shape[:2] + (1,), 0.2), outs['norm_cam']], -1)
    top2 = np.sort(scores, -1)[..., -2:]
    tie = top2[..., 1] - top2[..., 0] < 1e-5
    assert np.all((result['cam_pred'] == outs['cam_pred']) | tie)


def test_crf_with_alpha_golden(golden):
    ins, outs, case = golden('psa_crf_la_ha', 'psa_a2gnn')
    for prefix, alpha in (('la', case['args']['low_alpha']), ('ha', case['args']['high_alpha'])):
        keys, values, scores = cam.crf_with_alpha(ins['cam_keys'], ins['cam_values'], alpha, ins['img'])
        np.testing.assert_array_equal(keys, outs[f'{prefix}_keys'])
        np.testing.assert_allclose(scores, outs[f'{prefix}_crf_input'], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(values, outs[prefix], rtol=0, atol=1e-4)


def test_dict_files_round_trip_and_errors(tmp_path):
    d = {3: np.ones([4, 5], np.float32), 11: np.zeros([4, 5], np.float32)}
    path = str(tmp_path / 'a.npy')
    cam.save_dict(path, d)
    loaded = cam.load_dict(path)
    assert list(loaded) == [3, 11]
    keys, values = cam.from_dict(loaded)
    assert values.shape == (4, 5, 2) and keys.tolist() == [3, 11]
    with pytest.raises(FileNotFoundError, match='missing.npy'):
        cam.load_dict(str(tmp_path / 'missing.npy'))
    (tmp_path / 'bad.npy').write_bytes(b'not numpy')
    with pytest.raises(ValueError, match='bad.npy'):
        cam.load_dict(str(tmp_path / 'bad.npy'))


def test_crf_rejects_cam_of_other_size():
    with pytest.raises(ValueError, match='differs from image size'):
        cam.crf_with_alpha([1], np.zeros([4, 4, 1], np.float32), 4, np.zeros([5, 4, 3], np.uint8))
