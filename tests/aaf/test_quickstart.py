"""Fast checks of `aaf.quickstart`: the command lines it builds parse with the programs' own flags and agree with
each other (the checkpoint that training writes is the one inference reads, with the same network).

The full quick start (five subprocesses, ~1 min even with tiny settings on an idle machine) is not run here.
"""
import pytest
from absl import flags

import aaf.inference as aaf_inference
import aaf.quickstart as quickstart
import aaf.train as aaf_train
from common.cli import normalize_flag_names

MODEL_FLAG_NAMES = ('model', 'backbone_filters', 'backbone_blocks', 'psp_channels')


def parse(define, args):
    flag_values = flags.FlagValues()
    define(flag_values)
    flag_values(normalize_flag_names(['prog'] + [str(a) for a in args]))
    return flag_values


@pytest.fixture
def commands(monkeypatch, tmp_path):
    """The argument lists quickstart passes to `python -m`, captured instead of run."""
    monkeypatch.setattr(quickstart, 'FLAGS', parse(quickstart.define_flags,
                                                   ['--num-steps=5', '--crop-size=48', '--batch-size=4']))
    calls = []
    monkeypatch.setattr(quickstart, '_run', lambda args, log_path: calls.append(list(args)))
    checkpoints = {}
    for mode in quickstart.MODES:
        checkpoints[mode] = quickstart.train(mode, '/data', f'/snap/{mode}', str(tmp_path))
        quickstart.infer(checkpoints[mode], '/data', f'/res/{mode}', str(tmp_path), mode)
    return calls, checkpoints


def test_training_commands_parse_and_save_the_checkpoint_inference_reads(commands):
    calls, checkpoints = commands
    trainings = [c for c in calls if c[0] == 'aaf.train']
    inferences = [c for c in calls if c[0] == 'aaf.inference_msc']
    assert [c[0] for c in calls] == ['aaf.train', 'aaf.inference_msc'] * len(quickstart.MODES)
    for mode, train_args, infer_args in zip(quickstart.MODES, trainings, inferences):
        train_flags = parse(aaf_train.define_flags, train_args[1:])
        infer_flags = parse(lambda fv: aaf_inference.define_flags(True, fv), infer_args[1:])
        assert train_flags.mode == mode
        if mode != 'baseline':
            assert None not in (train_flags.kld_margin, train_flags.kld_lambda_1, train_flags.kld_lambda_2)
        # The engine saves model.ckpt-<step> when step % save_pred_every == 0 and step > 0; steps run
        # 0..num_steps-1, so the checkpoint quickstart hands to inference must be one of those.
        last_step = train_flags.num_steps - 1
        assert last_step > 0 and last_step % train_flags.save_pred_every == 0
        assert checkpoints[mode] == f'{train_flags.snapshot_dir}/model.ckpt-{last_step}'
        assert infer_flags.restore_from == checkpoints[mode]
        assert infer_flags.flip_aug and infer_flags.scale_aug
        for name in MODEL_FLAG_NAMES + ('num_classes',):
            assert getattr(infer_flags, name) == getattr(train_flags, name), name
        assert train_flags.input_size == infer_flags.input_size == '48,48'
        assert train_flags.data_list.endswith('train+.txt') and infer_flags.data_list.endswith('val.txt')
