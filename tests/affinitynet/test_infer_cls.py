import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from affinitynet import cam as cam_lib
from affinitynet import infer_cls
from cli_helpers import WIDTH, run_killed_at_nth_write, run_main, temp_files, tiny_weights, write_list
from common.data.lists import load_img_name_list


@pytest.fixture(scope='module')
def cls_setup(synthetic_voc, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('infer_cls')
    names = load_img_name_list(os.path.join(synthetic_voc, 'voc12', 'train_aug.txt'))[:4]
    return {'root': os.path.join(synthetic_voc, 'VOCdevkit', 'VOC2012'), 'names': names, 'tmp': tmp,
            'list': write_list(tmp / 'list.txt', names), 'weights': tiny_weights(tmp / 'cls.npz', 'cls'),
            'labels': os.path.join(synthetic_voc, 'voc12', 'cls_labels.npy')}


def _flags(s, out):
    return dict(weights=s['weights'], network='network.resnet38_cls', width_multiplier=WIDTH,
                infer_list=s['list'], voc12_root=s['root'], cls_labels=s['labels'], out_cam=out / 'cam',
                out_la_crf=out / 'la', out_cam_pred=out / 'pred')


def _assert_same_outputs(a, b, names):
    for name in names:
        da, db = cam_lib.load_dict(str(a / 'cam' / f'{name}.npy')), cam_lib.load_dict(str(b / 'cam' / f'{name}.npy'))
        assert list(da) == list(db)
        for k in da:
            np.testing.assert_allclose(da[k], db[k], rtol=1e-5, atol=1e-6)
        la_a, la_b = cam_lib.load_dict(str(a / 'la' / f'{name}.npy')), cam_lib.load_dict(str(b / 'la' / f'{name}.npy'))
        assert list(la_a) == list(la_b)
        assert (a / 'pred' / f'{name}.png').read_bytes() == (b / 'pred' / f'{name}.png').read_bytes()


@pytest.mark.slow
def test_kill_and_resume_equals_uninterrupted_run(cls_setup):
    s = cls_setup
    full, resumed = s['tmp'] / 'full', s['tmp'] / 'resumed'
    run_main(infer_cls, **_flags(s, full))
    # The interrupted run: a subprocess that SIGKILLs itself after the CAM of its second image is written (and
    # before that image's CRF and prediction), so the kill lands at the same point on a busy or an idle machine.
    args = [f'--{k}={v}' for k, v in _flags(s, resumed).items()]
    killer = (
        'import os, signal, sys\n'
        'import affinitynet.infer_cls as cli\n'
        'saved = []\n'
        'real_save = cli.cam_lib.save_dict\n'
        'def save_then_die(path, *a, **k):\n'
        '    real_save(path, *a, **k)\n'
        '    saved.append(path)\n'
        '    if len(saved) == 4:  # image 1: cam + la; image 2: cam, then the kill\n'
        '        os.kill(os.getpid(), signal.SIGKILL)\n'
        'cli.cam_lib.save_dict = save_then_die\n'
        'sys.argv = ["infer_cls"] + sys.argv[1:]\n'
        'cli.run()\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), TF_CPP_MIN_LOG_LEVEL='2')
    proc = subprocess.run([sys.executable, '-c', killer] + args, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, timeout=600)
    assert proc.returncode == -signal.SIGKILL
    done = {p[:-4] for p in os.listdir(resumed / 'pred') if p.endswith('.png')}
    assert 0 < len(done) < len(s['names']), 'the kill should interrupt the run'
    for folder in ('cam', 'la', 'pred'):  # every file under a final name is complete
        for entry in os.listdir(resumed / folder):
            if not entry.startswith('.tmp_'):
                if entry.endswith('.npy'):
                    cam_lib.load_dict(str(resumed / folder / entry))
    run_main(infer_cls, **_flags(s, resumed))
    _assert_same_outputs(full, resumed, s['names'])
    assert sorted(os.listdir(resumed / 'pred')) == sorted(f'{n}.png' for n in s['names'])


def test_outputs_match_library_and_skip_done_images(cls_setup, tmp_path):
    s = cls_setup
    flags_ = _flags(s, tmp_path)
    flags_['infer_list'] = write_list(tmp_path / 'one.txt', s['names'][:1])
    run_main(infer_cls, **flags_)
    name = s['names'][0]
    cam = cam_lib.load_dict(str(tmp_path / 'cam' / f'{name}.npy'))
    labels = np.load(s['labels'], allow_pickle=True).item()[name]
    assert sorted(cam) == [int(i) for i in np.nonzero(labels)[0]]
    la = cam_lib.load_dict(str(tmp_path / 'la' / f'{name}.npy'))
    assert list(la) == [0] + [k + 1 for k in cam]
    np.testing.assert_allclose(sum(la.values()), 1, atol=1e-4)  # CRF marginals
    before = os.path.getmtime(tmp_path / 'cam' / f'{name}.npy')
    run_main(infer_cls, **flags_)  # nothing left to do
    assert os.path.getmtime(tmp_path / 'cam' / f'{name}.npy') == before


def test_image_without_class_label_is_named(cls_setup, tmp_path):
    s = cls_setup
    flags_ = _flags(s, tmp_path)
    flags_['infer_list'] = write_list(tmp_path / 'list.txt', s['names'][:1] + ['2099_000001'])
    with pytest.raises(KeyError, match='2099_000001'):
        run_main(infer_cls, **flags_)


@pytest.mark.slow
def test_crf_stage_kill_and_resume_equals_uninterrupted_run(cls_setup):
    """The la/ha CRF-label stage killed in the middle of a write, then rerun: same dicts, no partial file."""
    s = cls_setup
    full, resumed = s['tmp'] / 'crf_full', s['tmp'] / 'crf_resumed'

    def crf_flags(out):
        values = _flags(s, out)
        values.update(out_cam=None, out_cam_pred=None, out_la_crf=out / 'la', out_ha_crf=out / 'ha')
        return values

    run_main(infer_cls, **crf_flags(full))
    # writes per image: la, ha; the 4th is image 2's ha dict, killed before its rename
    assert run_killed_at_nth_write('affinitynet.infer_cls', resumed, 4, **crf_flags(resumed)) == -signal.SIGKILL
    assert temp_files(resumed), 'the kill should leave a partial temporary file'
    assert sorted(e for e in os.listdir(resumed / 'ha') if e.endswith('.npy')) == [f'{s["names"][0]}.npy']
    run_main(infer_cls, **crf_flags(resumed))
    assert not temp_files(resumed)
    for kind in ('la', 'ha'):
        assert sorted(os.listdir(resumed / kind)) == sorted(os.listdir(full / kind)) == sorted(
            f'{n}.npy' for n in s['names'])
        for name in s['names']:
            a = cam_lib.load_dict(str(full / kind / f'{name}.npy'))
            b = cam_lib.load_dict(str(resumed / kind / f'{name}.npy'))
            assert list(a) == list(b)
            # the killed run's images come from another process, whose float rounding of the CNN differs in the
            # last bits; the CRF's 10 mean-field iterations amplify that to ~1e-5
            for k in a:
                np.testing.assert_allclose(a[k], b[k], atol=1e-4)


def test_compiled_forward_cam_equals_eager_and_traces_few_times(cls_setup):
    from affinitynet import model as model_lib
    from affinitynet.infer_cls import compiled_forward_cam, image_cams
    net = model_lib.build_classifier('resnet38', WIDTH)
    img = np.random.default_rng(0).integers(0, 255, [37, 52, 3], dtype=np.uint8)
    compiled = compiled_forward_cam(net)
    eager = image_cams(net, img, 'resnet38')
    traced = image_cams(net, img, 'resnet38', compiled)
    assert len({tuple(c.shape) for c in eager}) == 4  # four scales, each flipped
    for a, b in zip(eager, traced):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-6)
    # one relaxed trace serves every size instead of one per scale
    assert compiled.experimental_get_tracing_count() <= 2
