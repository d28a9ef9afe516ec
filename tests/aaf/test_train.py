"""Tests of the AAF training CLI (`aaf.train`): loss falls in every mode, the adversarial AAF weights move by
gradient ASCENT, stage-1 / stage-2 restores, and clear errors for bad flags.

Everything runs in-process on a reduced PSPNet (filters 4,8,8,16, one unit per block, PSP width 8) and a tiny
synthetic VOC set; the flags are parsed by absl exactly as the command line would be (`--hyphen-names`).
"""
import os

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
    from aaf.losses import adaptive_affinity_loss
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
        one_hot = tf.one_hot(tf.cast(small_labels[..., 0], tf.int32), num_classes)
        total = 0.0
        for index, size in enumerate((1, 2, 3)):
            edge, not_edge = adaptive_affinity_loss(
                small_labels, one_hot, probs, size, num_classes, 3.0,
                tf.reshape(w_edge[:, index], [1, 1, 1, num_classes, 1]),
                tf.reshape(w_not_edge[:, index], [1, 1, 1, num_classes, 1]))
            # An empty set adds 0 (the fused training op's rule; the literal mean would be NaN, Q-A3).
            for terms in (edge, not_edge):
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


def test_checkpoint_of_other_width_names_variable_and_shapes(voc_data, baseline_run, tmp_path):
    argv = base_argv(voc_data, 'baseline', snapshot_dir=str(tmp_path / 'wide'),
                     extra=['--backbone-filters=4,8,8,32', f'--restore-from={baseline_run["checkpoint"]}'])
    trainer = aaf_train.build_trainer(parse_train_flags(argv))
    with pytest.raises(ValueError, match=r"variable '[^']+' has shape \[.*\] in the checkpoint but \[.*\] in the "
                                         r"model"):
        trainer.restore()


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
