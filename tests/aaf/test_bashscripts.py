"""The AAF bash pipelines pass the flags that reproduce the original scripts (run with a recording stand-in for
python, so nothing trains)."""
import os
import stat
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = sorted(os.path.join(folder, name) for folder in ('bashscripts/voc12', 'bashscripts/cityscapes')
                 for name in os.listdir(os.path.join(REPO, folder)) if name.endswith('.sh'))


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


def flag(call, name):
    return call[call.index(name) + 1]


@pytest.mark.parametrize('script', SCRIPTS)
def test_training_flags_of_every_pipeline(script, tmp_path):
    trains = [c for c in recorded_calls(script, tmp_path) if c[:2] == ['-m', 'aaf.train']]
    assert len(trains) == (1 if 'cityscapes' in script else 2)
    multi_gpu = script.endswith('_mgpu.sh') or 'cityscapes' in script  # every original Cityscapes script is _mgpu
    for call in trains:
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
