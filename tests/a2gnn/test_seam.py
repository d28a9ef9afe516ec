import numpy as np
import tensorflow as tf

from a2gnn.seam import build_seam, normalize_cam, pcm
from common.weights.torch_convert import export_torch_state_dict, load_torch_state_dict


def test_released_weight_names_load_into_a_reduced_seam_net():
    """A hand-built PyTorch-layout state dict (tiny widths) with SEAM's keys loads by name, strictly."""
    net = build_seam(0.0625)
    state = export_torch_state_dict(net)
    for key in ('fc8.weight', 'f8_3.weight', 'f8_4.weight', 'f9.weight', 'conv1a.weight', 'b7.conv_branch2b2.weight'):
        assert key in state, key
    assert state['fc8.weight'].shape[:2] == (21, net.backbone.output['conv6'].shape[-1])
    assert state['f9.weight'].shape[:2] == (192, 3 + 64 + 128)
    rng = np.random.default_rng(0)
    state = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in state.items()}
    other = build_seam(0.0625)
    restored, missing, unexpected = load_torch_state_dict(other, state, strict=True)
    assert not missing and not unexpected
    np.testing.assert_array_equal(export_torch_state_dict(other)['fc8.weight'], state['fc8.weight'])
    cam, cam_rv = other(rng.normal(size=(1, 32, 40, 3)).astype(np.float32))
    assert cam.shape == (1, 32, 40, 21) and cam_rv.shape == (1, 32, 40, 21)


def test_cam_normalisation_and_pcm_match_numpy():
    rng = np.random.default_rng(1)
    cam = rng.normal(size=(1, 3, 4, 21)).astype(np.float32)
    relu = np.maximum(cam, 0)
    norm = np.maximum(relu - 1e-5, 0) / (relu.max(axis=(1, 2), keepdims=True) + 1e-5)
    fg = norm[..., 1:]
    fg_max = fg.max(-1, keepdims=True)
    expected = np.concatenate([1 - fg_max, np.where(fg < fg_max, 0, fg)], -1)
    np.testing.assert_allclose(normalize_cam(cam).numpy(), expected, rtol=1e-6, atol=1e-6)
    features = rng.normal(size=(1, 3, 4, 5)).astype(np.float32)
    g = features.reshape(12, 5)
    g = g / (np.linalg.norm(g, axis=1, keepdims=True) + 1e-5)
    aff = np.maximum(g @ g.T, 0)
    aff = aff / (aff.sum(axis=0, keepdims=True) + 1e-5)
    cam_rv = (expected.reshape(12, 21).T @ aff).T.reshape(1, 3, 4, 21)
    np.testing.assert_allclose(pcm(tf.constant(expected), features).numpy(), cam_rv, rtol=1e-5, atol=1e-6)


def test_infer_seam_writes_every_output_and_resumes(synthetic_voc, tmp_path):
    from absl import flags
    from PIL import Image
    from a2gnn import infer_seam
    lines = open(f'{synthetic_voc}/voc12/train.txt').read().splitlines()[:1]
    (tmp_path / 'list.txt').write_text(lines[0] + '\n')
    name = lines[0].split()[0][-15:-4]
    fv = flags.FlagValues()
    infer_seam.define_flags(fv)
    out = tmp_path / 'out'
    fv(['prog', '--weights', '', '--infer_list', str(tmp_path / 'list.txt'), '--voc12_root',
        f'{synthetic_voc}/VOCdevkit/VOC2012', '--cls_labels', f'{synthetic_voc}/voc12/cls_labels.npy',
        '--width_multiplier', '0.0625', '--out_cam', str(out / 'cam'), '--out_cam_pred', str(out / 'pred'),
        '--out_crf', str(out / 'crf'), '--crf', str(out / 'seeds'), '--ori_crf', str(out / 'full')])
    assert infer_seam.main([], fv, progress=False) == [name]
    seeds = np.array(Image.open(out / 'seeds' / (name + '.png')))
    full = np.array(Image.open(out / 'full' / (name + '.png')))
    assert seeds.shape == full.shape == (64, 64)
    assert np.all((seeds == 255) | (seeds == full))  # confident seeds are the top-100% labels or unlabelled
    for path in (out / 'cam' / (name + '.npy'), out / 'crf_4.0' / (name + '.npy'), out / 'crf_24.0' / (name + '.npy')):
        assert path.exists()
    assert infer_seam.main([], fv, progress=False) == []  # everything exists: skipped
