"""The AAF bash pipelines pass the flags that reproduce the original scripts (run with a recording stand-in for
python, so nothing trains)."""
import os
import stat
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = sorted(os.path.join(folder, name) for folder in ('bashscripts/voc12', 'bashscripts/cityscapes')
                 for name in os.listdir(os.path.join(REPO, folder))
                 if name.startswith('train_pspnet') and name.endswith('.sh'))  # the AAF pipelines


def recorded_calls(script, tmp_path):
    """The python command lines a pipeline script runs, one token list per call."""
    log = tmp_path / 'calls.txt'
    fake = tmp_path / 'python'
    fake.write_text('#!/bin/bash\nprintf "%s\\x1f" "$@" >> "$CALLS"\necho >> "$CALLS"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, PYTHON=str(fake), CALLS=str(log), DATAROOT=str(tmp_path / 'data'),
               SNAPSHOT_DIR=str(tmp_path / 'snap'))
    subprocess.run(['bash', script], cwd=REPO, env=env, check=True, capture_output=True, timeout=60)
    return [line.rstrip('\x1f').split('\x1f') for line in log.read_text().splitlines() if line]


def parse_program_flags(module, argv):
    """The absl flags of `module` (aaf.train / aaf.inference(_msc)) parsed from a recorded command line."""
    from absl import flags

    from common.cli import normalize_flag_names
    fv = flags.FlagValues()
    if module == 'aaf.train':
        from aaf.train import define_flags
        define_flags(fv)
    else:
        from aaf.inference import define_flags
        define_flags(module == 'aaf.inference_msc', fv)
    fv(normalize_flag_names([module] + list(argv)))
    return fv


def flag(call, name):
    return call[call.index(name) + 1]


@pytest.mark.parametrize('script', SCRIPTS)
def test_training_flags_of_every_pipeline(script, tmp_path):
    trains = [c for c in recorded_calls(script, tmp_path) if c[:2] == ['-m', 'aaf.train']]
    assert len(trains) == (1 if 'cityscapes' in script else 2)
    multi_gpu = script.endswith('_mgpu.sh') or 'cityscapes' in script  # every original Cityscapes script is _mgpu
    for call in trains:
        parsed = parse_program_flags('aaf.train', call[2:])  # every flag the script passes exists
        assert (parsed.loss_reduction, parsed.kernel_initializer) == (flag(call, '--loss-reduction'),
                                                                       flag(call, '--kernel-initializer'))
        assert flag(call, '--loss-reduction') == ('tower_mean' if multi_gpu else 'global_mean')
        assert flag(call, '--kernel-initializer') == ('msra_uniform' if multi_gpu else 'glorot_uniform')
        assert flag(call, '--num-gpu') == ('4' if multi_gpu else '1')
        mode = 'aaf' if '_aaf' in script else 'affinity' if '_affinity' in script else 'baseline'
        assert flag(call, '--mode') == mode
    assert '--not-restore-classifier' in trains[0]  # stage 1 from ImageNet
    if len(trains) == 2:  # stage 2 restores all of stage 1
        assert '--not-restore-classifier' not in trains[1] and flag(trains[1], '--restore-from').startswith(
            flag(trains[0], '--snapshot-dir'))


def test_gta5_evaluation_flags(tmp_path):
    """GTA5: the trainId ground truth is prepared first, inference runs at the Cityscapes settings with the
    Cityscapes colour map, the benchmark scores its predictions against GTA5/trainIds over 19 classes."""
    calls = recorded_calls('bashscripts/gta5/evaluate_cityscapes_model.sh', tmp_path)
    assert [c[1] for c in calls] == ['common.data.datasets', 'aaf.inference_msc', 'aaf.benchmark']
    prepare, infer, bench = calls
    gta5_root = str(tmp_path / 'data' / 'GTA5')
    assert flag(prepare, '--gta5-root') == gta5_root
    assert flag(infer, '--data-list') == flag(prepare, '--out-dir') + '/dataset/gta5/train.txt'
    assert (flag(infer, '--input-size'), flag(infer, '--strides')) == ('720,720', '480,480')
    assert flag(infer, '--colormap') == 'cityscapes' and flag(infer, '--num-classes') == '19'
    assert parse_program_flags('aaf.inference_msc', infer[2:]).scale_aug
    assert '--flip-aug' in infer and '--scale-aug' in infer
    assert flag(bench, '--pred-dir') == flag(infer, '--save-dir') + '/gray/'
    assert flag(bench, '--gt-dir') == gta5_root + '/trainIds/' and flag(bench, '--num-classes') == '19'


def test_gta5_synthetic_pipeline_steps(tmp_path):
    """Synthetic: data for both layouts, training on the Cityscapes set, then the GTA5 evaluation of its last
    checkpoint."""
    calls = recorded_calls('bashscripts/gta5/synthetic.sh', tmp_path)
    programs = [c[1] for c in calls]
    assert programs == ['common.data.synthetic', 'common.data.synthetic', 'aaf.train', 'common.data.datasets',
                        'aaf.inference', 'aaf.benchmark']
    train, infer = calls[2], calls[4]
    assert flag(train, '--data-list').endswith('cityscapes/dataset/cityscapes/train.txt')
    assert flag(train, '--num-classes') == '19'
    assert flag(infer, '--restore-from') == flag(train, '--snapshot-dir') + '/model.ckpt-300'
    assert flag(infer, '--backbone-filters') == flag(train, '--backbone-filters')


@pytest.mark.slow
def test_gta5_synthetic_pipeline_runs_its_python_steps(tmp_path):
    """bashscripts/gta5/synthetic.sh for real with the training skipped (IS_TRAIN_1=0; a seeded untrained network's
    checkpoint stands in): data, GTA5 list and trainId ground truth, inference with the Cityscapes colour map, and
    a printed mIoU that equals one computed here from the written predictions and the GTA5 labelIds."""
    import re
    import sys

    import numpy as np
    import tensorflow as tf
    from PIL import Image

    from common.data.datasets import cityscapes_label_lut, read_label_indices
    from common.models.factory import build_segmentation_model
    from common.train.checkpoints import make_checkpoint

    model_flags = '--backbone-filters 4,4,4,4 --backbone-blocks 1,1,1,1 --psp-channels 4 --bn-decay 0.99'
    tf.keras.utils.set_random_seed(0)
    model = build_segmentation_model('pspnet', 19, (48, 48), psp_channels=4, training=False,
                                     backbone={'filters': (4, 4, 4, 4), 'num_blocks': (1, 1, 1, 1), 'bn_decay': 0.99})
    snapshot = tmp_path / 'snap'
    make_checkpoint(model.variables).write(str(snapshot / 'model.ckpt-5'))
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=REPO, SYNTHETIC_ROOT=str(tmp_path / 'data'),
               SNAPSHOT_DIR=str(snapshot), NUM_STEPS='5', NUM_IMAGES='2', IMAGE_HEIGHT='48', IMAGE_WIDTH='96',
               IS_TRAIN_1='0', INFERENCE_INPUT_SIZE='48,48', INFERENCE_STRIDES='48,48', EXTRA_MODEL_FLAGS=model_flags,
               TF_CPP_MIN_LOG_LEVEL='2')
    result = subprocess.run(['bash', 'bashscripts/gta5/synthetic.sh'], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    gta5 = tmp_path / 'data' / 'gta5' / 'GTA5'
    predictions = sorted((snapshot / 'results' / 'gta5' / 'gray').glob('*.png'))
    assert [p.name for p in predictions] == ['00001.png', '00002.png']
    confusion = np.zeros((19, 19), np.int64)
    for path in predictions:
        pred = np.array(Image.open(path)).astype(np.int64)
        with Image.open(snapshot / 'results' / 'gta5' / 'color' / path.name) as colour:
            assert colour.mode == 'RGB'
        gt = cityscapes_label_lut()[read_label_indices(gta5 / 'labels' / path.name)].astype(np.int64)
        keep = gt < 19
        confusion += np.bincount(gt[keep] * 19 + pred[keep], minlength=19 * 19).reshape(19, 19)
    iou = np.diag(confusion) / np.maximum(confusion.sum(0) + confusion.sum(1) - np.diag(confusion), 1)
    printed = float(re.search(r'mean IOU: ([\d.]+)%', result.stdout).group(1))
    assert printed == pytest.approx(100 * iou.mean(), abs=1e-3)
    assert 'road' in result.stdout and 'bicycle' in result.stdout  # Cityscapes class names
