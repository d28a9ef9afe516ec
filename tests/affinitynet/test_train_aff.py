import os

import numpy as np
import pytest

from affinitynet import cam as cam_lib
from affinitynet import data as data_lib
from affinitynet import train_aff
from cli_helpers import WIDTH, run_main, tiny_weights, write_list
from common.data.lists import load_img_name_list
from PIL import Image


def _crf_dirs(root, names, tmp):
    rng = np.random.default_rng(0)
    for name in names:
        h, w = np.array(Image.open(os.path.join(root, 'JPEGImages', name + '.jpg'))).shape[:2]
        for kind in ('la', 'ha'):
            p = rng.dirichlet([1, 1, 1], size=[h, w]).astype(np.float32)
            cam_lib.save_dict(str(tmp / kind / f'{name}.npy'), {0: p[..., 0], 4: p[..., 1], 9: p[..., 2]})


@pytest.mark.slow
def test_two_steps_train_and_save(synthetic_voc, tmp_path):
    root = os.path.join(synthetic_voc, 'VOCdevkit', 'VOC2012')
    names = load_img_name_list(os.path.join(synthetic_voc, 'voc12', 'train_aug.txt'))[:4]
    _crf_dirs(root, names, tmp_path)
    # from classifier weights, as the original (a from-scratch backbone trains every layer, which crashed
    # oneDNN's CPU kernels; the CLIs switch oneDNN off, but this process imported TensorFlow before)
    run_main(train_aff, network='network.resnet38_aff', width_multiplier=WIDTH,
             weights=tiny_weights(tmp_path / 'cls.npz', 'cls'),
             train_list=write_list(tmp_path / 'list.txt', names), voc12_root=root, la_crf_dir=tmp_path / 'la',
             ha_crf_dir=tmp_path / 'ha', batch_size=2, crop_size=96, max_steps=2, session_name=tmp_path / 'aff')
    weights = np.load(tmp_path / 'aff.npz')
    assert weights['f9.weight'].shape == (448, 448, 1, 1) and np.all(np.isfinite(weights['f9.weight']))
    assert os.path.isdir(tmp_path / 'aff_ckpt')  # checkpoints to resume from


def test_dataset_runs_without_the_autotuning_model(synthetic_voc, tmp_path):
    # its thread delayed the end of every training run by up to a minute (iterator teardown waited for it)
    root = os.path.join(synthetic_voc, 'VOCdevkit', 'VOC2012')
    names = load_img_name_list(os.path.join(synthetic_voc, 'voc12', 'train_aug.txt'))[:2]
    _crf_dirs(root, names, tmp_path)
    dataset = data_lib.build_aff_dataset(write_list(tmp_path / 'list.txt', names), root, str(tmp_path / 'la'),
                                         str(tmp_path / 'ha'), 2, crop_size=32)
    assert dataset.options().autotune.enabled is False


def test_missing_crf_file_is_named(tmp_path):
    (tmp_path / 'la').mkdir()
    with pytest.raises(FileNotFoundError, match=r'la CRF file not found: .*x.npy'):
        data_lib.load_crf_stack(str(tmp_path / 'la' / 'x.npy'), str(tmp_path / 'ha' / 'x.npy'), (4, 4))


def test_crf_of_another_size_is_named(tmp_path):
    cam_lib.save_dict(str(tmp_path / 'la.npy'), {0: np.ones([3, 3], np.float32)})
    with pytest.raises(ValueError, match=r'la.npy: size \(3, 3\) differs from its image \(4, 4\)'):
        data_lib.load_crf_stack(str(tmp_path / 'la.npy'), str(tmp_path / 'la.npy'), (4, 4))


def test_training_example_labels_follow_the_crf_rule():
    rng = np.random.default_rng(3)
    import random
    img = Image.fromarray(rng.integers(0, 255, [40, 56, 3], dtype=np.uint8))
    stack = np.concatenate([rng.dirichlet([1, 1], [40, 56]), rng.dirichlet([1, 1], [40, 56])], -1)
    image, bg, fg, neg = data_lib.aff_training_example(img, stack, 96, rng=random.Random(0))
    assert image.shape == (96, 96, 3) and bg.shape == fg.shape == neg.shape == (34, (12 - 4) * (12 - 8))
    assert np.all(bg + fg + neg <= 1)
    assert bg.sum() + fg.sum() + neg.sum() > 0
