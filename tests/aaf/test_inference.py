"""Tests of the AAF inference CLIs (`aaf.inference`, `aaf.inference_msc`) and `aaf.benchmark` on their output.

A reduced PSPNet with random weights (BN statistics randomised too, so predictions vary) is saved in the training
engine's checkpoint format; the CLIs' PNGs must equal an in-process `common.infer` prediction with the same
weights, exactly.
"""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from PIL import Image

import aaf.inference as aaf_inference
from common.cli import normalize_flag_names
from common.colormap import voc_colormap
from common.models.factory import build_segmentation_model

NUM_CLASSES = 21
INPUT_SIZE = (48, 48)
STRIDES = (32, 32)
BACKBONE = {'filters': (4, 8, 8, 16), 'num_blocks': (1, 1, 1, 1)}
REDUCED_MODEL = ['--backbone-filters=4,8,8,16', '--backbone-blocks=1,1,1,1', '--psp-channels=8']


def parse_inference_flags(argv, msc):
    flag_values = flags.FlagValues()
    aaf_inference.define_flags(msc, flag_values)
    flag_values(normalize_flag_names(['aaf.inference'] + list(argv)))
    return flag_values


@pytest.fixture(scope='module')
def voc_data(synthetic_voc):
    return synthetic_voc


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """A random reduced PSPNet written as `model.ckpt-0` of the training engine's format."""
    from common.train import checkpoints as ckpt_lib
    tf.keras.utils.set_random_seed(3)
    model = build_segmentation_model('pspnet', NUM_CLASSES, INPUT_SIZE, backbone=BACKBONE, psp_channels=8,
                                     training=True)
    rng = np.random.default_rng(0)
    for variable in model.variables:
        if 'moving_mean' in variable.path:
            variable.assign(rng.normal(0, 0.5, variable.shape).astype(np.float32))
        elif 'moving_variance' in variable.path:
            variable.assign(rng.uniform(0.5, 2.0, variable.shape).astype(np.float32))
    prefix = str(tmp_path_factory.mktemp('ckpt') / 'model.ckpt-0')
    ckpt_lib.make_checkpoint(model.variables).write(prefix)
    return prefix


def cli_argv(voc_data, checkpoint, save_dir, extra=()):
    return [f'--data-dir={voc_data}/VOCdevkit/', f'--data-list={voc_data}/dataset/voc12/val.txt',
            '--input-size=48,48', '--strides=32,32', f'--restore-from={checkpoint}', '--colormap=voc',
            '--num-classes=21', f'--save-dir={save_dir}', '--noprogress'] + REDUCED_MODEL + list(extra)


def reference_model(checkpoint):
    from common.train.checkpoints import restore_variables
    model = build_segmentation_model('pspnet', NUM_CLASSES, INPUT_SIZE, backbone=BACKBONE, psp_channels=8,
                                     training=False)
    restored, missing, _ = restore_variables(model.variables, checkpoint)
    assert restored and not missing
    return model


def val_images(voc_data):
    from common.data.lists import read_labeled_image_list
    images, _ = read_labeled_image_list(f'{voc_data}/VOCdevkit/', f'{voc_data}/dataset/voc12/val.txt')
    assert images
    return images


def check_outputs(save_dir, images, predict):
    classes = set()
    for image_path in images:
        name = os.path.basename(image_path).replace('jpg', 'png')
        gray = np.asarray(Image.open(os.path.join(save_dir, 'gray', name)))
        color = Image.open(os.path.join(save_dir, 'color', name))
        expected = predict(image_path)
        assert gray.dtype == np.uint8 and gray.shape == expected.shape
        np.testing.assert_array_equal(gray, expected, err_msg=name)
        assert color.mode == 'RGB'
        np.testing.assert_array_equal(np.asarray(color), voc_colormap()[gray], err_msg=name)
        classes.update(np.unique(gray).tolist())
    return classes


@pytest.fixture(scope='module')
def single_scale(voc_data, checkpoint, tmp_path_factory):
    save_dir = str(tmp_path_factory.mktemp('pred_ss'))
    written = aaf_inference.predict_list(parse_inference_flags(cli_argv(voc_data, checkpoint, save_dir), False),
                                         msc=False)
    return save_dir, written


def test_inference_equals_in_process_prediction(voc_data, checkpoint, single_scale):
    from common.infer import load_image, sliding_window_predict
    save_dir, written = single_scale
    images = val_images(voc_data)
    assert len(written) == len(images)
    model = reference_model(checkpoint)
    classes = check_outputs(save_dir, images, lambda path: sliding_window_predict(
        load_image(path), model, INPUT_SIZE, STRIDES, NUM_CLASSES))
    assert len(classes) > 1  # not a constant map: the comparison means something


def test_inference_msc_flip_scale_equals_in_process_prediction(voc_data, checkpoint, tmp_path):
    from common.infer import load_image, multiscale_predict
    save_dir = str(tmp_path / 'pred_msc')
    argv = cli_argv(voc_data, checkpoint, save_dir, ['--flip-aug', '--scale-aug'])
    aaf_inference.predict_list(parse_inference_flags(argv, True), msc=True)
    model = reference_model(checkpoint)
    images = val_images(voc_data)
    check_outputs(save_dir, images, lambda path: multiscale_predict(
        load_image(path), model, INPUT_SIZE, STRIDES, NUM_CLASSES, flip_aug=True, scale_aug=True))


def test_benchmark_cli_matches_evaluate_dirs(voc_data, single_scale):
    from common.eval.benchmark import evaluate_dirs
    save_dir, _ = single_scale
    pred_dir, gt_dir = os.path.join(save_dir, 'gray'), f'{voc_data}/VOCdevkit/VOC2012/segcls'
    expected = evaluate_dirs(pred_dir, gt_dir, num_classes=NUM_CLASSES)
    proc = subprocess.run([sys.executable, '-m', 'aaf.benchmark', f'--pred-dir={pred_dir}', f'--gt-dir={gt_dir}',
                           '--num-classes=21', '--noprogress'], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    per_class = [float(v) for v in re.findall(r'^class .*: \d+, acc: ([0-9.]+)%$', proc.stdout, re.M)]
    assert len(per_class) == NUM_CLASSES
    np.testing.assert_allclose(per_class, expected['iou'], atol=1e-4)
    mean_iou = float(re.search(r'^mean IOU: ([0-9.]+)%$', proc.stdout, re.M).group(1))
    assert mean_iou == pytest.approx(expected['mean_iou'], abs=1e-4)
    pixel_acc = float(re.search(r'^mean Pixel Acc: ([0-9.]+)%$', proc.stdout, re.M).group(1))
    assert pixel_acc == pytest.approx(expected['pixel_acc'], abs=1e-4)


def test_missing_restore_from(voc_data, tmp_path):
    argv = cli_argv(voc_data, '', str(tmp_path))
    with pytest.raises(ValueError, match='--restore-from'):
        aaf_inference.predict_list(parse_inference_flags(argv, False), msc=False)


def test_empty_data_list(voc_data, checkpoint, tmp_path):
    argv = cli_argv(voc_data, checkpoint, str(tmp_path)) + ['--data-list=']
    with pytest.raises(ValueError, match='--data-list'):
        aaf_inference.predict_list(parse_inference_flags(argv, False), msc=False)


def test_missing_data_list_file(voc_data, checkpoint, tmp_path):
    missing = str(tmp_path / 'no_such_list.txt')
    argv = cli_argv(voc_data, checkpoint, str(tmp_path)) + [f'--data-list={missing}']
    with pytest.raises(FileNotFoundError, match=f'--data-list: list file not found: {missing}'):
        aaf_inference.predict_list(parse_inference_flags(argv, False), msc=False)


def test_bad_input_size(voc_data, checkpoint, tmp_path):
    argv = cli_argv(voc_data, checkpoint, str(tmp_path)) + ['--input-size=40,40']
    with pytest.raises(ValueError, match='--input-size'):
        aaf_inference.predict_list(parse_inference_flags(argv, False), msc=False)


def test_checkpoint_of_other_width_names_variable_and_shapes(voc_data, checkpoint, tmp_path):
    argv = cli_argv(voc_data, checkpoint, str(tmp_path)) + ['--psp-channels=16']
    with pytest.raises(ValueError, match=r"variable '[^']+' has shape \[.*\] in the checkpoint but \[.*\] in the "
                                         r"model"):
        aaf_inference.predict_list(parse_inference_flags(argv, False), msc=False)
