"""Tests of the AAF training CLI (`aaf.train`): loss falls in every mode, the adversarial AAF weights move by
gradient ASCENT, stage-1 / stage-2 restores, and clear errors for bad flags.

Everything runs in-process on a reduced PSPNet (filters 4,8,8,16, one unit per block, PSP width 8) and a tiny
synthetic VOC set; the flags are parsed by absl exactly as the command line would be (`--hyphen-names`).
"""
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

import aaf.train as aaf_train
from common.cli import normalize_flag_names
from common.models.naming import original_name

NUM_STEPS = 20
LEARNING_RATE = 1e-2
REDUCED_MODEL = ['--backbone-filters=4,8,8,16', '--backbone-blocks=1,1,1,1', '--psp-channels=8']
KLD = ['--kld-margin=3.0', '--kld-lambda-1=1.0', '--kld-lambda-2=1.0']


def parse_train_flags(argv):
    """A fresh FlagValues holding aaf.train's flags, parsed from command-line tokens."""
    flag_values = flags.FlagValues()
    aaf_train.define_flags(flag_values)
    flag_values(normalize_flag_names(['aaf.train'] + list(argv)))
    return flag_values


@pytest.fixture(scope='module')
def voc_data(synthetic_voc):
    return synthetic_voc


def base_argv(voc_data, mode, num_steps=NUM_STEPS, snapshot_dir='', extra=()):
    return [f'--mode={mode}', f'--data-dir={voc_data}/VOCdevkit/',
            f'--data-list={voc_data}/dataset/voc12/train+.txt', '--batch-size=4', '--input-size=48,48',
            '--iter-size=1', '--is-training', f'--learning-rate={LEARNING_RATE}', f'--num-steps={num_steps}',
            f'--save-pred-every={num_steps - 1}', '--update-tb-every=1000', '--random-seed=0', '--noprogress',
            f'--snapshot-dir={snapshot_dir}'] + REDUCED_MODEL + (KLD if mode != 'baseline' else []) + list(extra)


def fixed_batches(trainer, count):
    """The first `count` batches of the CLI's own input pipeline, replayed in a fixed order.

    The pipeline's parallel map does not promise an element order; freezing the batches lets a test recompute
    the very batch a step used.
    """
    dataset = trainer.dataset_fn(tf.distribute.InputContext())
    batches = [tuple(t.numpy() for t in batch) for batch in dataset.take(count)]
    stacked = tuple(np.stack(parts) for parts in zip(*batches))
    trainer.dataset_fn = lambda ctx: tf.data.Dataset.from_tensor_slices(stacked).repeat()
    return batches


class Recorder:
    """Engine hook: per-step metrics, and the adversarial weights right after step 0."""

    def __init__(self):
        self.metrics, self.trainer, self.extra_after_step0 = [], None, None

    def __call__(self, step, metrics):
        self.metrics.append(dict(metrics))
        if step == 0 and self.trainer is not None and self.trainer.extra_variables:
            self.extra_after_step0 = [np.array(v.numpy()) for v in self.trainer.extra_variables]

    def series(self, name):
        return np.array([m[name] for m in self.metrics])


def model_values(model):
    return {original_name(v): np.array(v.numpy()) for v in model.variables}


def checkpoint_values(prefix, names):
    """{original name: value} of the named variables in an engine checkpoint, and the checkpoint reader."""
    from common.train.checkpoints import variable_key
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(variable_key(name)) for name in names}, reader


def run_mode(voc_data, mode, snapshot_dir='', extra=()):
    recorder = Recorder()
    trainer = aaf_train.build_trainer(parse_train_flags(base_argv(voc_data, mode, snapshot_dir=snapshot_dir,
                                                                  extra=extra)), hooks=[recorder])
    recorder.trainer = trainer
    return trainer, recorder


def assert_loss_falls(recorder):
    seg = recorder.series('seg_loss')
    assert len(seg) == NUM_STEPS and np.all(np.isfinite(seg))
    assert seg[-5:].mean() < 0.8 * seg[:5].mean(), seg


@pytest.fixture(scope='module')
def baseline_run(voc_data, tmp_path_factory):
    """Stage 0: the softmax baseline trained from scratch; its last checkpoint initialises stage 1."""
    snapshot = str(tmp_path_factory.mktemp('stage0'))
    trainer, recorder = run_mode(voc_data, 'baseline', snapshot_dir=snapshot)
    metrics = trainer.train()
    return dict(trainer=trainer, recorder=recorder, metrics=metrics,
                checkpoint=os.path.join(snapshot, f'model.ckpt-{NUM_STEPS - 1}'))


@pytest.fixture(scope='module')
def aaf_run(voc_data, baseline_run, tmp_path_factory):
    """Stage 1: AAF from the stage-0 checkpoint with --not-restore-classifier, on frozen batches."""
    snapshot = str(tmp_path_factory.mktemp('stage1'))
    trainer, recorder = run_mode(voc_data, 'aaf', snapshot_dir=snapshot,
                                 extra=[f'--restore-from={baseline_run["checkpoint"]}', '--not-restore-classifier'])
    batches = fixed_batches(trainer, NUM_STEPS)
    fresh = model_values(trainer.model)  # the seeded initialisation, before any restore
    status = trainer.restore()
    initial = model_values(trainer.model)
    trainer.train()  # restores again (same values), then trains
    return dict(trainer=trainer, recorder=recorder, batches=batches, fresh=fresh, initial=initial,
                restore_status=status, checkpoint=os.path.join(snapshot, f'model.ckpt-{NUM_STEPS - 1}'))


def test_baseline_loss_falls(baseline_run):
    assert_loss_falls(baseline_run['recorder'])
    assert 'aaf_loss' not in baseline_run['metrics'] and 'aff_loss' not in baseline_run['metrics']
    assert os.path.exists(baseline_run['checkpoint'] + '.index')


def test_affinity_loss_falls(voc_data):
    trainer, recorder = run_mode(voc_data, 'affinity')
    trainer.train()
    assert_loss_falls(recorder)
    aff = recorder.series('aff_loss')
    assert np.all(np.isfinite(aff)) and np.all(aff > 0)
    assert not trainer.extra_variables


def test_aaf_loss_falls(aaf_run):
    assert_loss_falls(aaf_run['recorder'])
    assert np.all(aaf_run['recorder'].series('aaf_loss') > 0)


def test_aaf_weights_move_by_gradient_ascent(aaf_run):
    """After step 0 (TF1 momentum, zero slots): w1 = w0 + lr * dL_aaf/dw, dL computed independently here with
    the literal (non-fused) loss on the same batch and weights; a descent update would give the opposite sign."""
    from aaf.losses import adaptive_affinity_loss_per_size
    from common.data.aaf_reader import shrink_labels
    trainer, recorder = aaf_run['trainer'], aaf_run['recorder']
    num_classes = 21
    images, labels = aaf_run['batches'][0]

    current = [v.numpy() for v in trainer.model.variables]
    initial = aaf_run['initial']
    for v in trainer.model.variables:
        v.assign(initial[original_name(v)])
    w_edge0 = tf.Variable(tf.zeros([1, 1, 1, num_classes, 1, 3]))
    w_not_edge0 = tf.Variable(tf.zeros([1, 1, 1, num_classes, 1, 3]))

    def aaf_loss(w_edge_raw, w_not_edge_raw, probs, small_labels):
        w_edge = tf.nn.softmax(tf.reshape(w_edge_raw, [num_classes, 3]), axis=-1)
        w_not_edge = tf.nn.softmax(tf.reshape(w_not_edge_raw, [num_classes, 3]), axis=-1)
        edges, not_edges = adaptive_affinity_loss_per_size(small_labels, probs, num_classes, 3.0, w_edge,
                                                           w_not_edge, (1, 2, 3))
        total = 0.0
        for terms in edges + not_edges:
            # An empty set adds 0 (the fused training op's rule; the literal mean would be NaN, Q-A3).
            total += tf.math.divide_no_nan(tf.reduce_sum(terms), tf.cast(tf.size(terms), tf.float32))
        return total  # dec = 10^0 = 1 at step 0

    try:
        logits = trainer.model(images, training=True)
    finally:
        for v, value in zip(trainer.model.variables, current):
            v.assign(value)
    probs = tf.nn.softmax(logits, axis=-1)
    small_labels = shrink_labels(tf.convert_to_tensor(labels), logits.shape[1:3])
    with tf.GradientTape() as tape:
        loss0 = aaf_loss(w_edge0, w_not_edge0, probs, small_labels)
    grads = tape.gradient(loss0, [w_edge0, w_not_edge0])

    assert recorder.extra_after_step0 is not None
    for moved, grad in zip(recorder.extra_after_step0, grads):
        grad = grad.numpy()
        assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 1e-6  # the check below must not be vacuous
        np.testing.assert_allclose(moved, LEARNING_RATE * grad, rtol=1e-2, atol=1e-6)
    # Ascent: the adversarial step raised the AAF term at the same predictions.
    loss1 = aaf_loss(*[tf.constant(m) for m in recorder.extra_after_step0], probs, small_labels)
    assert float(loss1) > float(loss0)


def test_stage1_restore_skips_block5(aaf_run, baseline_run):
    assert aaf_run['restore_status'] == 'restored'
    initial, fresh = aaf_run['initial'], aaf_run['fresh']
    stage0, _ = checkpoint_values(baseline_run['checkpoint'], initial)
    block5 = [n for n in initial if 'block5' in n]
    others = [n for n in initial if 'block5' not in n]
    assert block5 and others
    for name in others:
        np.testing.assert_array_equal(initial[name], stage0[name], err_msg=name)
    for name in block5:
        np.testing.assert_array_equal(initial[name], fresh[name], err_msg=name)
    # Stage 0 trained block5, so "not restored" is observable.
    assert any(not np.array_equal(stage0[n], fresh[n]) for n in block5 if 'weights' in n)


def test_stage2_restores_all_but_adversarial_weights_and_slots(voc_data, aaf_run, tmp_path):
    names = list(aaf_run['initial']) + ['edge_w', 'nonedge_w']
    stage1, reader = checkpoint_values(aaf_run['checkpoint'], names)
    assert np.abs(stage1['edge_w']).max() > 0 and np.abs(stage1['nonedge_w']).max() > 0
    slot_keys = [k for k in reader.get_variable_to_shape_map() if k.startswith('optimizer/') and 'momentum' in k]
    assert slot_keys and any(np.abs(reader.get_tensor(k)).max() > 0 for k in slot_keys)

    trainer, _ = run_mode(voc_data, 'aaf', snapshot_dir=str(tmp_path / 'stage2'),
                          extra=[f'--restore-from={aaf_run["checkpoint"]}'])
    assert trainer.restore() == 'restored'
    values = model_values(trainer.model)
    assert any('moving_mean' in n or 'moving_variance' in n for n in values)
    for name, value in values.items():
        np.testing.assert_array_equal(value, stage1[name], err_msg=name)
    for variable in trainer.extra_variables:
        assert not np.any(variable.numpy())
    for slot in trainer.optimizer.slots.values():
        assert not np.any(slot.numpy())
    assert int(trainer.step.numpy()) == 0


@pytest.mark.parametrize('mode, missing', [('aaf', '--kld-margin'), ('affinity', '--kld-lambda-2')])
def test_missing_kld_flags(voc_data, mode, missing):
    argv = [a for a in base_argv(voc_data, mode) if not a.startswith(missing + '=')]
    with pytest.raises(ValueError, match=missing):
        aaf_train.build_trainer(parse_train_flags(argv))


def test_empty_data_list(voc_data):
    argv = base_argv(voc_data, 'baseline') + ['--data-list=']
    with pytest.raises(ValueError, match='--data-list'):
        aaf_train.build_trainer(parse_train_flags(argv))


def test_missing_data_list_file(voc_data, tmp_path):
    missing = str(tmp_path / 'no_such_list.txt')
    with pytest.raises(FileNotFoundError, match=f'--data-list: list file not found: {missing}'):
        aaf_train.build_trainer(parse_train_flags(base_argv(voc_data, 'baseline') + [f'--data-list={missing}']))


def test_main_returns_none_so_the_cli_exits_0(monkeypatch):
    # absl's app.run does sys.exit(main(argv)): a returned metrics dict would make a successful run exit 1.
    monkeypatch.setattr(aaf_train, 'train_from_flags', lambda cfg, hooks=(): {'loss': 1.0, 'step': 3})
    assert aaf_train.main(['aaf.train']) is None


@pytest.mark.parametrize('size', ['50,50', '48,96'])
def test_bad_input_size_for_pspnet(voc_data, size):
    argv = base_argv(voc_data, 'baseline') + [f'--input-size={size}']
    with pytest.raises(ValueError, match='--input-size.*multiple of 48'):
        aaf_train.build_trainer(parse_train_flags(argv))


def test_checkpoint_of_other_width_lists_every_mismatch(voc_data, baseline_run, tmp_path):
    argv = base_argv(voc_data, 'baseline', snapshot_dir=str(tmp_path / 'wide'),
                     extra=['--backbone-filters=4,8,8,32', f'--restore-from={baseline_run["checkpoint"]}'])
    trainer = aaf_train.build_trainer(parse_train_flags(argv))
    before = model_values(trainer.model)
    with pytest.raises(ValueError, match=r"another architecture; (\d+) variable\(s\) differ in shape") as err:
        trainer.restore()
    message = str(err.value)
    listed = re.findall(r"variable '([^']+)' has shape \[[\d, ]+\] in the checkpoint but \[[\d, ]+\] in the model",
                        message)
    # Widening block 4 changes its convolutions, their BN and block5's first convolution: all are listed.
    assert len(listed) == int(re.search(r'; (\d+) variable', message).group(1)) > 10
    assert any('block4' in n for n in listed) and any('block5' in n for n in listed)
    for name, value in model_values(trainer.model).items():  # nothing was assigned
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_restore_that_leaves_variables_uninitialised_is_an_error(voc_data, baseline_run, tmp_path):
    """A deeper block 4 than the checkpoint's: its extra unit would stay at the initialiser."""
    argv = base_argv(voc_data, 'baseline', snapshot_dir=str(tmp_path / 'deeper'),
                     extra=['--backbone-blocks=1,1,1,2', f'--restore-from={baseline_run["checkpoint"]}'])
    trainer = aaf_train.build_trainer(parse_train_flags(argv))
    with pytest.raises(ValueError, match=r'(\d+) model variable\(s\) are not in the checkpoint') as err:
        trainer.restore()
    missing = [n for n in model_values(trainer.model) if 'block4/unit_2/' in n]
    assert missing and all(f'\n  {name}' in str(err.value) for name in missing)
    assert '--allow-partial-restore' in str(err.value)
    assert 'block4/unit_1/' not in str(err.value)

    partial = aaf_train.build_trainer(parse_train_flags(argv + ['--allow-partial-restore']))
    assert partial.restore() == 'restored'
    stage0, _ = checkpoint_values(baseline_run['checkpoint'], ['resnet_v1_101/block4/unit_1/bottleneck_v1/conv1/weights'])
    for name, value in stage0.items():
        np.testing.assert_array_equal(model_values(partial.model)[name], value)


def test_finished_run_says_complete_and_writes_nothing(voc_data, baseline_run, caplog):
    snapshot = os.path.dirname(baseline_run['checkpoint'])
    before = {name: os.path.getmtime(os.path.join(snapshot, name)) for name in os.listdir(snapshot)}
    argv = base_argv(voc_data, 'baseline', snapshot_dir=snapshot, extra=['--learning-rate=0.5'])
    with caplog.at_level('WARNING'):
        metrics = aaf_train.train_from_flags(parse_train_flags(argv))
    assert metrics == {'step': NUM_STEPS, 'complete': True}
    assert f'training is complete: {baseline_run["checkpoint"]}' in caplog.text
    assert f'step {NUM_STEPS - 1} (--num-steps {NUM_STEPS})' in caplog.text
    after = {name: os.path.getmtime(os.path.join(snapshot, name)) for name in os.listdir(snapshot)}
    assert after == before  # config (and everything else) untouched


def test_resume_names_step_and_ignored_restore_from(voc_data, baseline_run, aaf_run, caplog):
    snapshot = os.path.dirname(baseline_run['checkpoint'])
    argv = base_argv(voc_data, 'baseline', num_steps=NUM_STEPS + 5, snapshot_dir=snapshot,
                     extra=[f'--restore-from={aaf_run["checkpoint"]}'])
    trainer = aaf_train.build_trainer(parse_train_flags(argv))
    with caplog.at_level('WARNING'):
        assert trainer.restore() == 'resumed'
    assert int(trainer.step.numpy()) == NUM_STEPS
    assert (f'resuming from {baseline_run["checkpoint"]} at step {NUM_STEPS} of {NUM_STEPS + 5}' in caplog.text)
    assert f'--restore-from {aaf_run["checkpoint"]} is ignored' in caplog.text


# --------------------------------------------------------------------------------------------------------------
# Whole training steps against the original scripts (golden cases aaf_train_baseline / _affinity / _aaf).

GOLDEN_TRAIN_MODES = ('baseline', 'affinity', 'aaf')


def golden_train_argv(case, data_dir, snapshot_dir, golden_root):
    """The manifest's command line (scalars.flags with its path placeholders filled) plus the port's model flags."""
    scalars = case['scalars']
    paths = {'{data_dir}': data_dir, '{data_list}': os.path.join(data_dir, 'train.txt'),
             '{restore_from}': str(golden_root / scalars['init_checkpoint']), '{snapshot_dir}': snapshot_dir}
    argv = [f'--mode={scalars["mode"]}']
    for name, value in scalars['flags']:
        argv.append(f'--{name}' if value is None else f'--{name}={paths.get(str(value), value)}')
    return argv + ['--backbone-filters=' + ','.join(map(str, scalars['filters'])),
                   '--backbone-blocks=' + ','.join(map(str, scalars['num_blocks'])),
                   f'--psp-channels={scalars["psp_channels"]}', f'--bn-decay={scalars["backbone_bn_decay"]}',
                   '--deterministic', '--noprogress']


def write_golden_train_data(inputs, case, data_dir):
    """The case's image/label pair as files, and a list of scalars.list_lines identical entries."""
    os.makedirs(os.path.join(data_dir, 'JPEGImages'))
    os.makedirs(os.path.join(data_dir, 'SegmentationClassAug'))
    with open(os.path.join(data_dir, 'JPEGImages', 'train_0.jpg'), 'wb') as f:
        f.write(inputs['image_jpeg'].tobytes())
    with open(os.path.join(data_dir, 'SegmentationClassAug', 'train_0.png'), 'wb') as f:
        f.write(inputs['label_png'].tobytes())
    with open(os.path.join(data_dir, 'train.txt'), 'w') as f:
        f.write((case['scalars']['list_entry'] + '\n') * case['scalars']['list_lines'])


def trainer_state(trainer):
    """{TF1 name: value} of every variable the original's Saver writes: model, adversarial, '<var>/Momentum'."""
    values = {original_name(v): np.array(v.numpy()) for v in trainer.model.variables + trainer.extra_variables}
    for key, slot in trainer.optimizer.slots.items():
        variable_name, slot_name = key.rsplit('/', 1)
        assert slot_name == 'momentum', key
        values[variable_name + '/Momentum'] = np.array(slot.numpy())
    return values


@pytest.fixture(scope='module', params=GOLDEN_TRAIN_MODES)
def golden_train_run(request, tmp_path_factory, golden_dir, golden):
    load_golden = golden
    from tensorflow.python.framework import config as tf_config
    inputs, outputs, case = load_golden(f'aaf_train_{request.param}')
    root = tmp_path_factory.mktemp(f'golden_train_{request.param}')
    data_dir = str(root / 'data')
    write_golden_train_data(inputs, case, data_dir)
    saved_step = case['scalars']['saved_step']
    recorder, state = Recorder(), {}

    def snapshot_at_saved_step(step, metrics):
        if step == saved_step:
            state.update(trainer_state(trainer))

    was_deterministic = tf_config.is_op_determinism_enabled()
    try:
        trainer = aaf_train.build_trainer(
            parse_train_flags(golden_train_argv(case, data_dir, str(root / 'snapshots'),
                                                golden_dir / 'aaf_segsort')),
            hooks=[recorder, snapshot_at_saved_step])
        trainer.train()
    finally:
        if not was_deterministic:  # --deterministic is process-wide; later tests run as before
            tf_config.disable_op_determinism()
    return dict(case=case, outputs=outputs, recorder=recorder, state=state,
                snapshot_dir=str(root / 'snapshots'), golden_root=golden_dir / 'aaf_segsort')


def test_golden_train_losses_per_step(golden_train_run, assert_golden):
    """The loss terms and learning rate of every step equal those the original script fetched."""
    case, outputs, recorder = (golden_train_run[k] for k in ('case', 'outputs', 'recorder'))
    tolerance = case['tolerance']
    steps = np.array([m['step'] - 1 for m in recorder.metrics], np.int32)
    assert_golden(steps, outputs['step'], tolerance['out_step'])
    assert_golden(recorder.series('lr'), outputs['learning_rate'], tolerance['out_learning_rate'])
    assert_golden(recorder.series('loss'), outputs['total_loss'], tolerance['out_total_loss'])
    ported = {'seg_loss': 'seg_loss', 'l2_loss': 'l2_loss', 'aff_loss': 'aff_loss', 'aaf_loss': 'aaf_loss'}
    compared = 0
    for ours, theirs in ported.items():
        if theirs in outputs:
            assert_golden(recorder.series(ours), outputs[theirs], tolerance['out_' + theirs])
            compared += 1
    assert compared == {'baseline': 2, 'affinity': 3, 'aaf': 3}[case['scalars']['mode']], sorted(outputs)


def test_golden_train_every_variable(golden_train_run):
    """Every variable the original saved after step `saved_step` (weights, BN statistics, momentum slots, the
    adversarial weights) matches the port's under the manifest's checkpoint rule."""
    case, outputs, state = (golden_train_run[k] for k in ('case', 'outputs', 'state'))
    scalars = case['scalars']
    rule = scalars['checkpoint_tolerance']
    want = tf.train.load_checkpoint(str(golden_train_run['golden_root'] / scalars['checkpoint']))
    init = tf.train.load_checkpoint(str(golden_train_run['golden_root'] / scalars['init_checkpoint']))
    init_names = set(init.get_variable_to_shape_map())
    names = [str(n) for n in outputs['var_names']]
    assert sorted(names) == sorted(state), (sorted(set(names) ^ set(state)))
    for name, padded_shape in zip(names, outputs['var_shapes']):
        expected = want.get_tensor(name)
        assert list(expected.shape) == [d for d in padded_shape if d >= 0], name
        got = state[name]
        assert got.shape == expected.shape, name
        start = init.get_tensor(name) if name in init_names else np.zeros_like(expected)
        bound = (rule['rtol_update'] * np.abs(expected - start).max() + rule['rtol_value'] * np.abs(expected).max())
        assert np.abs(got - expected).max() <= bound, (name, np.abs(got - expected).max(), bound)
    if scalars['mode'] == 'aaf':
        tolerance = case['tolerance']
        np.testing.assert_allclose(state['edge_w'], outputs['final_edge_w'], rtol=0,
                                   atol=tolerance['out_final_edge_w']['atol'])
        np.testing.assert_allclose(state['nonedge_w'], outputs['final_nonedge_w'], rtol=0,
                                   atol=tolerance['out_final_nonedge_w']['atol'])


def test_golden_train_writes_checkpoint_of_saved_step(golden_train_run):
    """The run's own checkpoint of `saved_step` holds what the test compared (the trainer state at that step)."""
    from common.train.checkpoints import variable_key
    saved_step = golden_train_run['case']['scalars']['saved_step']
    reader = tf.train.load_checkpoint(os.path.join(golden_train_run['snapshot_dir'], f'model.ckpt-{saved_step}'))
    for name, value in golden_train_run['state'].items():
        if not name.endswith('/Momentum'):
            np.testing.assert_array_equal(reader.get_tensor(variable_key(name)), value, err_msg=name)


# --------------------------------------------------------------------------------------------------------------
# Multi-replica: --loss-reduction global_mean reduces EVERY term over the global batch.

def _replica_run(mode, devices, loss_reduction, images, labels, num_classes=3):
    """One engine step of aaf.train's loss (2 conv layers: the loss terms are under test, not the network);
    returns ({name: update of the variable}, per-step metrics)."""
    import keras
    from aaf.losses import AdaptiveAffinityWeights
    from common.models.naming import set_original_name
    from common.train.engine import TrainConfig, Trainer
    from common.train.optimizers import aaf_variable_groups
    from common.train.strategy import make_strategy

    strategy = make_strategy(devices=devices)
    keras.utils.set_random_seed(3)
    with strategy.scope():
        layers = [keras.layers.Conv2D(8, 3, padding='same', activation='relu'),
                  keras.layers.Conv2D(num_classes, 3, padding='same')]
        model = keras.Sequential([keras.Input(images.shape[1:])] + layers)
        weights = AdaptiveAffinityWeights(num_classes) if mode == 'aaf' else None
    for index, layer in enumerate(layers):
        set_original_name(layer.kernel, f'net/conv{index}/weights')
        set_original_name(layer.bias, f'net/conv{index}/biases')
    extras = [weights.edge_w, weights.nonedge_w] if weights else []
    if weights:  # start away from the uniform softmax so the weights matter per class
        weights.edge_w.assign(np.linspace(-1, 1, weights.edge_w.shape.num_elements()).reshape(weights.edge_w.shape))

    def dataset_fn(ctx):
        bs = ctx.get_per_replica_batch_size(len(images))
        return tf.data.Dataset.from_tensor_slices((images, labels)).repeat().batch(bs, drop_remainder=True)

    loss_fn = aaf_train.make_loss_fn(mode, num_classes, num_steps=4, kld_margin=3.0, kld_lambda_1=1.0,
                                     kld_lambda_2=0.5, weights=weights)
    config = TrainConfig(num_steps=1, learning_rate=0.05, iter_size=1, save_pred_every=1000, update_tb_every=1000,
                         loss_reduction=loss_reduction, progress=False)
    recorder = Recorder()
    initial = {original_name(v): v.numpy() for v in model.variables + extras}
    Trainer(model, loss_fn, dataset_fn, config, strategy=strategy, extra_variables=extras,
            variable_groups=aaf_variable_groups(extras), hooks=[recorder]).train()
    return {original_name(v): v.numpy() - initial[original_name(v)] for v in model.variables + extras}, recorder


@pytest.mark.parametrize('mode', ['affinity', 'aaf'])
def test_two_replicas_equal_one_device_in_affinity_modes(mode):
    """2 replicas x 2 images == 1 device x 4 images with global_mean, for the segmentation AND affinity terms,
    although the replicas hold very different numbers of valid pixels and edges (the engine's test of ratio lists
    shows that tower_mean differs there)."""
    rng = np.random.RandomState(5)
    images = rng.randn(4, 12, 12, 3).astype(np.float32)
    blocks = rng.randint(0, 3, (4, 4, 4)).astype(np.uint8)
    labels = np.repeat(np.repeat(blocks, 3, axis=1), 3, axis=2)[..., None]
    labels[1, :6] = 255    # replica 0: half an image ignored
    labels[2] = 255        # replica 1: one image almost all ignored ...
    labels[2, :3, :6] = 1
    labels[3, :, 4:] = 255  # ... and two thirds of the other
    key = 'aff_loss' if mode == 'affinity' else 'aaf_loss'
    single, single_metrics = _replica_run(mode, ['/cpu:0'], 'global_mean', images, labels)
    multi, multi_metrics = _replica_run(mode, ['/cpu:0', '/cpu:1'], 'global_mean', images, labels)
    for name in ('seg_loss', key, 'loss'):
        np.testing.assert_allclose(multi_metrics.series(name), single_metrics.series(name), rtol=1e-5,
                                   err_msg=name)
    assert single.keys() == multi.keys()
    for name, update in single.items():
        assert np.abs(update).max() > 0, name  # every variable moved, the adversarial ones too
        np.testing.assert_allclose(multi[name], update, rtol=0, atol=1e-4 * np.abs(update).max(), err_msg=name)


def test_affinity_impl_flag_picks_the_implementation_and_all_agree():
    """--affinity-impl reaches aaf_loss_terms: kernel, xla and reference give the same AAF term; a clash with
    --nofused-loss is an error naming both flags."""
    assert parse_train_flags(['--affinity-impl', 'xla']).affinity_impl == 'xla'
    assert parse_train_flags([]).affinity_impl is None
    from aaf.losses import AdaptiveAffinityWeights
    rng = np.random.default_rng(0)
    logits = tf.constant(rng.normal(size=(2, 12, 12, 5)).astype(np.float32) * 3)
    labels = np.repeat(np.repeat(rng.integers(0, 5, (2, 4, 4)), 3, 1), 3, 2).astype(np.uint8)[..., None]
    weights = AdaptiveAffinityWeights(5)
    terms = {}
    for impl in ('kernel', 'xla', 'reference', None):
        loss_fn = aaf_train.make_loss_fn('aaf', 5, 10, 3.0, 1.0, 1.0, weights=weights, fused=impl != 'reference',
                                         impl=impl)
        terms[impl], _ = loss_fn(lambda images, training: logits, (None, labels), True, 2)
    for impl in ('kernel', 'xla', None):
        np.testing.assert_allclose(terms[impl]['aaf_loss'], terms['reference']['aaf_loss'], rtol=1e-5)
    with pytest.raises(ValueError, match='--affinity_impl'):
        aaf_train.make_loss_fn('aaf', 5, 10, 3.0, 1.0, 1.0, weights=weights, fused=False, impl='kernel')(
            lambda images, training: logits, (None, labels), True, 2)
