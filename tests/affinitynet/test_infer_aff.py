import os
import signal

import numpy as np
import pytest

from affinitynet import cam as cam_lib
from affinitynet import infer_aff
from cli_helpers import WIDTH, run_killed_at_nth_write, run_main, temp_files, tiny_weights, write_list
from common.data.lists import load_img_name_list
from PIL import Image


@pytest.fixture(scope='module')
def aff_setup(synthetic_voc, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('infer_aff')
    names = load_img_name_list(os.path.join(synthetic_voc, 'voc12', 'train_aug.txt'))[:2]
    root = os.path.join(synthetic_voc, 'VOCdevkit', 'VOC2012')
    rng = np.random.default_rng(0)
    for name in names:
        h, w = np.array(Image.open(os.path.join(root, 'JPEGImages', name + '.jpg'))).shape[:2]
        cam_lib.save_dict(str(tmp / 'cam' / f'{name}.npy'), {3: rng.uniform(size=[h, w]).astype(np.float32),
                                                              7: rng.uniform(size=[h, w]).astype(np.float32)})
    return {'root': root, 'names': names, 'tmp': tmp, 'list': write_list(tmp / 'list.txt', names),
            'weights': tiny_weights(tmp / 'aff.npz', 'aff')}


def _flags(s, out, **kw):
    values = dict(weights=s['weights'], network='network.resnet38_aff', width_multiplier=WIDTH,
                  infer_list=s['list'], voc12_root=s['root'], cam_dir=s['tmp'] / 'cam', out_rw=out, logt=4)
    values.update(kw)
    return values


def test_sparse_and_dense_walk_write_the_same_labels(aff_setup, tmp_path):
    s = aff_setup
    run_main(infer_aff, **_flags(s, tmp_path / 'sparse', rw_impl='sparse'))
    run_main(infer_aff, **_flags(s, tmp_path / 'dense', rw_impl='dense'))
    for name in s['names']:
        sparse = np.array(Image.open(tmp_path / 'sparse' / f'{name}.png'))
        dense = np.array(Image.open(tmp_path / 'dense' / f'{name}.png'))
        assert sparse.dtype == np.uint8 and set(np.unique(sparse)) <= {0, 4, 8}
        np.testing.assert_array_equal(sparse, dense)


def test_missing_cam_file_is_named(aff_setup, tmp_path):
    s = aff_setup
    flags_ = _flags(s, tmp_path / 'rw', cam_dir=tmp_path / 'empty')
    with pytest.raises(FileNotFoundError, match=r'CAM file not found: .*empty'):
        run_main(infer_aff, **flags_)


def test_cam_of_another_size_is_named(aff_setup, tmp_path):
    s = aff_setup
    name = s['names'][0]
    cam_lib.save_dict(str(tmp_path / 'cam' / f'{name}.npy'), {3: np.zeros([5, 7], np.float32)})
    with pytest.raises(ValueError, match=rf'{name}.npy: CAM size \(5, 7\) differs from its image size'):
        run_main(infer_aff, **_flags(s, tmp_path / 'rw', cam_dir=tmp_path / 'cam'))


@pytest.mark.slow
def test_kill_and_resume_equals_uninterrupted_run(aff_setup, tmp_path):
    """The random-walk stage killed in the middle of its second label write, then rerun: same PNGs, no partial
    file."""
    s = aff_setup
    full, resumed = tmp_path / 'full', tmp_path / 'resumed'
    run_main(infer_aff, **_flags(s, full))
    assert run_killed_at_nth_write('affinitynet.infer_aff', resumed, 2, **_flags(s, resumed)) == -signal.SIGKILL
    assert temp_files(resumed), 'the kill should leave a partial temporary file'
    assert sorted(e for e in os.listdir(resumed) if e.endswith('.png')) == [f'{s["names"][0]}.png']
    run_main(infer_aff, **_flags(s, resumed))
    assert not temp_files(resumed)
    assert sorted(os.listdir(resumed)) == sorted(os.listdir(full)) == sorted(f'{n}.png' for n in s['names'])
    for name in s['names']:
        assert (resumed / f'{name}.png').read_bytes() == (full / f'{name}.png').read_bytes()
