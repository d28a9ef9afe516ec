"""The training engine: multi-replica equivalence, iter-size (faithful and accumulated) and L2 vs NumPy, loss
reductions, NaN stop, stage-2 partial restore, kill-and-resume."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from common.models.naming import set_original_name
from common.train import checkpoints as ck
from common.train.engine import NonFiniteLossError, TrainConfig, Trainer
from common.train.optimizers import aaf_variable_groups
from common.train.schedules import poly_lr
from common.train.strategy import make_strategy

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
RNG = np.random.RandomState(0)
X = RNG.randn(12, 3).astype(np.float32)
Y = RNG.randn(12, 1).astype(np.float32)
W0 = np.array([[0.5], [-0.3], [0.2]], np.float32)


def _linear_model(strategy, names=('net/fc/weights',)):
    """x [N,3] -> [N,1] (one or two bias-free Dense layers, original names given)."""
    with strategy.scope():
        layers = [keras.layers.Dense(1 if i == len(names) - 1 else 3, use_bias=False) for i in range(len(names))]
        model = keras.Sequential([keras.Input((3,))] + layers)
    for layer, name in zip(layers, names):
        set_original_name(layer.kernel, name)
    layers[-1].kernel.assign(W0 if len(names) == 1 else np.ones((3, 1), np.float32))
    return model


def _xy_dataset(input_context, global_batch=2):
    bs = input_context.get_per_replica_batch_size(global_batch)
    return tf.data.Dataset.from_tensor_slices((X, Y)).repeat().batch(bs, drop_remainder=True)


def _mse_loss(model, batch, training):
    x, y = batch
    return {'mse': tf.reduce_mean(tf.square(tf.cast(model(x, training=training), tf.float32) - y))}


def _config(**kwargs):
    base = dict(num_steps=3, learning_rate=0.1, power=0.9, momentum=0.9, weight_decay=0.01, iter_size=1,
                save_pred_every=1000, update_tb_every=1000, progress=False)
    base.update(kwargs)
    return TrainConfig(**base)


def _numpy_linear(num_steps, iter_size, accumulate, lr0=0.1, wd=0.01, m=0.9, power=0.9):
    """TF1 momentum on mean((Xw-y)^2) + wd*|w|^2/2; iteration k uses samples 2k, 2k+1 (mod 12)."""
    w = W0.astype(np.float64)
    acc = np.zeros_like(w)
    k = 0
    for step in range(num_steps):
        lr = lr0 * (1 - step / num_steps) ** power
        grads = []
        for _ in range(iter_size):
            idx = [(2 * k) % 12, (2 * k + 1) % 12]
            k += 1
            x, y = X[idx].astype(np.float64), Y[idx].astype(np.float64)
            g = 2.0 / len(idx) * x.T @ (x @ w - y) + wd * w
            if accumulate:
                grads.append(g)
            else:
                acc = m * acc + g
                w = w - lr * acc
        if accumulate:
            acc = m * acc + np.mean(grads, axis=0)
            w = w - lr * acc
    return w


@pytest.mark.parametrize('devices', [['/cpu:0'], ['/cpu:0', '/cpu:1']])
@pytest.mark.parametrize('accumulate', [False, True])
def test_iter_size_and_l2_vs_numpy(devices, accumulate):
    strategy = make_strategy(devices=devices)
    model = _linear_model(strategy)
    trainer = Trainer(model, _mse_loss, _xy_dataset, _config(iter_size=2, accumulate_gradients=accumulate),
                      strategy=strategy)
    metrics = trainer.train()
    expected = _numpy_linear(3, 2, accumulate)
    np.testing.assert_allclose(model.layers[-1].kernel.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert metrics['step'] == 3 and int(trainer.step.numpy()) == 3
    assert int(trainer.data_position.numpy()) == 3 * 2 * len(devices)  # per-replica batches handed out
    assert metrics['lr'] == pytest.approx(poly_lr(0.1, 2, 3, 0.9))
    assert set(metrics) >= {'mse', 'l2_loss', 'loss'}


def test_single_device_iterates_the_dataset_itself():
    # a distributed iterator's per-device dataset runs tf.data's autotuning thread, and destroying it at the end
    # of a run waited up to a minute for that thread; one device needs no distribution
    strategy = make_strategy(devices=['/cpu:0'])
    assert isinstance(strategy, tf.distribute.OneDeviceStrategy)
    trainer = Trainer(_linear_model(strategy), _mse_loss, _xy_dataset, _config(), strategy=strategy)
    ours = trainer._make_iterator()
    assert isinstance(ours, tf.data.Iterator) and not isinstance(ours, tf.distribute.DistributedIterator)
    distributed = iter(strategy.distribute_datasets_from_function(_xy_dataset))
    for _ in range(7):  # past one epoch of the 12 rows
        for a, b in zip(next(ours), next(distributed)):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


# Rows 0..3 are the first global batch: replica 0 gets rows 0,1 (2 valid), replica 1 rows 2,3 (1 valid).
_VALID = np.ones((12, 1), np.float32)
_VALID[3] = 0.0


def _seg_term_on_two_replicas(loss_fn):
    """The 'seg' term of one step on 2 replicas x 2 of (X, Y, _VALID), per loss reduction; checks the update is
    finite."""
    def dataset_fn(ctx):
        bs = ctx.get_per_replica_batch_size(4)
        return tf.data.Dataset.from_tensor_slices((X, Y, _VALID)).repeat().batch(bs, drop_remainder=True)

    results = {}
    for reduction in ('global_mean', 'tower_mean'):
        strategy = make_strategy(devices=['/cpu:0', '/cpu:1'])
        model = _linear_model(strategy)
        cfg = _config(num_steps=1, weight_decay=0.0, loss_reduction=reduction)
        results[reduction] = Trainer(model, loss_fn, dataset_fn, cfg, strategy=strategy).train()['seg']
        assert np.isfinite(model.layers[-1].kernel.numpy()).all()
    err = ((X[:4] @ W0 - Y[:4]) ** 2)[:, 0].astype(np.float64)
    return results, err, _VALID[:4, 0].astype(np.float64)


def test_loss_reductions_global_and_tower_mean():
    """Pair terms: 'global_mean' = sum/sum over all replicas; 'tower_mean' = image-weighted per-replica means."""
    def loss_fn(model, batch, training):
        x, y, m = batch
        err = tf.square(model(x, training=training) - y) * m
        return {'seg': (tf.reduce_sum(err), tf.reduce_sum(m))}

    results, err, mask = _seg_term_on_two_replicas(loss_fn)
    assert results['global_mean'] == pytest.approx((err * mask).sum() / mask.sum(), rel=1e-5)
    tower = 0.5 * err[:2].mean() + 0.5 * err[2]  # fac = 2 images / 4 per tower (aaf_segsort.md 4.5)
    assert results['tower_mean'] == pytest.approx(tower, rel=1e-5)
    assert abs(results['global_mean'] - results['tower_mean']) > 1e-3


def test_ratio_list_terms_reduce_each_ratio():
    """A list of (numerator, denominator) pairs = sum of ratios, each reduced like a pair; a ratio whose
    denominator is 0 everywhere adds 0 (not 0/0), one that is 0 on a replica only is still a global mean."""
    def loss_fn(model, batch, training):
        x, y, m = batch
        err = tf.square(model(x, training=training) - y)
        first_only = m * tf.constant([[1.0], [0.0]])  # row 0 of each replica
        return {'seg': [(tf.reduce_sum(err * m), tf.reduce_sum(m)),
                        (2.0 * tf.reduce_sum(err * first_only), tf.reduce_sum(first_only)),
                        (tf.reduce_sum(err) * 0.0, tf.constant(0.0))]}

    results, err, mask = _seg_term_on_two_replicas(loss_fn)
    global_mean = (err * mask).sum() / mask.sum() + 2.0 * (err[0] + err[2]) / 2
    tower_mean = 0.5 * (err[:2].mean() + 2.0 * err[0]) + 0.5 * (err[2] + 2.0 * err[2])
    assert results['global_mean'] == pytest.approx(global_mean, rel=1e-5)
    assert results['tower_mean'] == pytest.approx(tower_mean, rel=1e-5)
    assert abs(global_mean - tower_mean) > 1e-3


def test_multi_replica_step_equals_single_device_step():
    """Reduced PSPNet with synchronized BN: 2 replicas x 2 images == 1 device x 4 images (weights + BN stats)."""
    from common.models.pspnet import build_pspnet
    rng = np.random.RandomState(1)
    images = (rng.randn(4, 48, 48, 3) * 40).astype(np.float32)
    labels = rng.randint(0, 3, (4, 6, 6)).astype(np.int32)
    labels[1, :3] = 255
    labels[2] = 255
    labels[2, 0, 0] = 1  # replicas get very different numbers of valid pixels

    def dataset_fn(ctx):
        bs = ctx.get_per_replica_batch_size(4)
        data = {'image': images, 'label': labels}
        return tf.data.Dataset.from_tensor_slices(data).repeat().batch(bs, drop_remainder=True)

    def loss_fn(model, batch, training):
        logits = model(batch['image'], training=training)
        valid = batch['label'] < 3
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.where(valid, batch['label'], 0),
                                                            logits=logits)
        return {'seg_loss': (tf.reduce_sum(tf.where(valid, ce, 0.0)), tf.reduce_sum(tf.cast(valid, tf.float32)))}

    results = []
    for devices in (['/cpu:0'], ['/cpu:0', '/cpu:1']):
        strategy = make_strategy(devices=devices)
        keras.utils.set_random_seed(3)
        with strategy.scope():
            model = build_pspnet(num_classes=3, input_size=48, synchronized=True, psp_channels=4,
                                 backbone=dict(filters=(4, 4, 4, 4), num_blocks=(1, 1, 1, 1)))
        initial = [v.numpy() for v in model.variables]
        Trainer(model, loss_fn, dataset_fn, _config(num_steps=1, learning_rate=0.05, weight_decay=5e-4),
                strategy=strategy).train()
        results.append(({v.path: v.numpy() for v in model.variables}, initial))
    (single, init_single), (multi, init_multi) = results
    for a, b in zip(init_single, init_multi):
        np.testing.assert_array_equal(a, b)
    changed = {k for i, k in enumerate(single) if np.abs(single[k] - init_single[i]).max() > 1e-4}
    assert any('moving' in k for k in changed) and any('weights' in k for k in changed)
    for key in single:
        np.testing.assert_allclose(multi[key], single[key], rtol=0, atol=1e-5, err_msg=key)


def test_nan_stops_before_saving(tmp_path):
    strategy = make_strategy(devices=['/cpu:0'])
    model = _linear_model(strategy)
    seen = {}

    def loss_fn(model, batch, training, step):
        x, y = batch
        bad = tf.where(step >= 3.0, np.float32(np.nan), 0.0)
        return {'mse': tf.reduce_mean(tf.square(model(x, training=training) - y)), 'aaf_loss': bad}

    def hook(step, metrics):
        seen[step] = model.layers[-1].kernel.numpy().copy()

    snap = str(tmp_path / 'snap')
    trainer = Trainer(model, loss_fn, _xy_dataset, _config(num_steps=6, save_pred_every=2, update_tb_every=2,
                                                           snapshot_dir=snap), strategy=strategy, hooks=[hook])
    with pytest.raises(NonFiniteLossError, match=r"step 3: term 'aaf_loss'") as info:
        trainer.train()
    assert info.value.step == 3 and info.value.last_checkpoint.endswith('model.ckpt-2')
    assert tf.train.latest_checkpoint(snap).endswith('model.ckpt-2')
    assert not any(name.startswith('model.ckpt-3') or name.startswith('model.ckpt-4') for name in os.listdir(snap))
    stored = tf.train.load_checkpoint(tf.train.latest_checkpoint(snap)).get_tensor(ck.variable_key('net/fc/weights'))
    np.testing.assert_array_equal(stored, seen[2])
    # Summaries at steps 0 and 2 (every 2), config beside the checkpoints.
    tags = set()
    for event_file in (p for p in os.listdir(snap) if p.startswith('events')):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(snap, event_file)):
            tags.update((v.tag, event.step) for v in event.summary.value)
    assert {('mse', 0), ('aaf_loss', 2), ('total_loss', 2), ('learning_rate', 0), ('l2_loss', 0)} <= tags
    assert '| num_steps = 6' in open(os.path.join(snap, 'config')).read()


def test_stage2_restore_skips_extras_slots_and_excluded(tmp_path):
    names = ('net/conv1/weights', 'net/block5/fc/weights')
    strategy = make_strategy(devices=['/cpu:0'])
    model = _linear_model(strategy, names)
    with strategy.scope():
        edge_w = tf.Variable(tf.zeros([2]), name='edge_w')

    def loss_fn(model, batch, training):
        x, y = batch
        w = tf.nn.softmax(edge_w)
        return {'mse': tf.reduce_mean(tf.square(model(x, training=training) - y)) * (1.0 + w[0])}

    stage1 = str(tmp_path / 'stage1')
    t1 = Trainer(model, loss_fn, _xy_dataset, _config(num_steps=3, save_pred_every=2, snapshot_dir=stage1),
                 strategy=strategy, extra_variables=[edge_w], variable_groups=aaf_variable_groups([edge_w]))
    t1.train()
    assert t1.optimizer.group_of(edge_w).ascent and t1.optimizer.group_of(model.layers[-1].kernel).lr_mult == 10
    assert np.abs(edge_w.numpy()).max() > 0  # the ascent group moved it
    trained = {n: l.kernel.numpy() for n, l in zip(names, model.layers)}

    model2 = _linear_model(strategy, names)
    init_block5 = model2.layers[-1].kernel.numpy()
    with strategy.scope():
        edge2 = tf.Variable(tf.zeros([2]), name='edge_w')
    cfg = _config(num_steps=3, snapshot_dir=str(tmp_path / 'stage2'), restore_from=stage1,
                  exclude_scopes=('block5',))
    t2 = Trainer(model2, loss_fn, _xy_dataset, cfg, strategy=strategy, extra_variables=[edge2],
                 variable_groups=aaf_variable_groups([edge2]))
    assert t2.restore() == 'restored'
    np.testing.assert_array_equal(model2.layers[0].kernel.numpy(), trained[names[0]])
    np.testing.assert_array_equal(model2.layers[-1].kernel.numpy(), init_block5)  # excluded scope
    np.testing.assert_array_equal(edge2.numpy(), np.zeros(2))  # adversarial weights restart (Q-A9)
    assert all(not np.any(s.numpy()) for s in t2.optimizer.slots.values()) and int(t2.step.numpy()) == 0


def test_mixed_precision_scales_and_skips_overflow():
    """mixed_float16 layer: float32 loss terms, result close to float32; an fp16 overflow skips the update and
    halves the loss scale (dynamic loss scaling, Keras semantics)."""
    strategy = make_strategy(devices=['/cpu:0'])

    def small_loss(model, batch, training):  # scaled gradients stay inside the float16 range
        return {'mse': _mse_loss(model, batch, training)['mse'] * 1e-3}

    results = {}
    for policy in ('float32', 'mixed_float16'):
        with strategy.scope():
            layer = keras.layers.Dense(1, use_bias=False, dtype=policy)
            model = keras.Sequential([keras.Input((3,)), layer])
        set_original_name(layer.kernel, 'net/fc/weights')
        layer.kernel.assign(W0)
        trainer = Trainer(model, small_loss, _xy_dataset, _config(mixed_precision=policy != 'float32',
                                                                  learning_rate=50.0), strategy=strategy)
        metrics = trainer.train()
        assert isinstance(metrics['mse'], float) and layer.kernel.dtype == 'float32'
        results[policy] = layer.kernel.numpy()
    assert np.abs(results['float32'] - W0).max() > 0.05
    np.testing.assert_allclose(results['mixed_float16'], results['float32'], rtol=1e-2, atol=2e-3)
    assert float(trainer.loss_scale.scale.numpy()) == 2.0 ** 15 and int(trainer.optimizer.iterations.numpy()) == 3

    with strategy.scope():
        layer = keras.layers.Dense(1, use_bias=False, dtype='mixed_float16')
        model = keras.Sequential([keras.Input((3,)), layer])
    set_original_name(layer.kernel, 'net/fc/weights')
    layer.kernel.assign(W0)

    def huge_loss(model, batch, training):
        x, y = batch
        return {'mse': tf.reduce_mean(tf.square(tf.cast(model(x * 300.0, training=training), tf.float32) - y))}

    trainer = Trainer(model, huge_loss, _xy_dataset, _config(num_steps=1, weight_decay=0.0, mixed_precision=True),
                      strategy=strategy)
    trainer.train()
    np.testing.assert_array_equal(layer.kernel.numpy(), W0)  # fp16 gradients overflowed: update skipped
    assert float(trainer.loss_scale.scale.numpy()) == 2.0 ** 14 and int(trainer.optimizer.iterations.numpy()) == 0


def test_bad_setup_is_reported():
    with pytest.raises(ValueError, match='--iter-size'):
        _config(iter_size=0)
    with pytest.raises(ValueError, match='--loss-reduction'):
        _config(loss_reduction='sum')
    cfg = TrainConfig.from_flags({'num-steps': 5, 'not_restore_classifier': True, 'batch_size': 3})
    assert cfg.num_steps == 5 and cfg.exclude_scopes == ('block5',)
    model = _linear_model(tf.distribute.get_strategy())
    with pytest.raises(ValueError, match='strategy.scope'):
        Trainer(model, _mse_loss, _xy_dataset, _config(), strategy=make_strategy(devices=['/cpu:0', '/cpu:1']))


KILL_SCRIPT = textwrap.dedent('''
    import os, sys, time
    os.environ['TF_CPP_MIN_LOG_LEVEL'] = '2'
    import numpy as np, tensorflow as tf, keras
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(7)
    from common.models.naming import set_original_name
    from common.train.engine import TrainConfig, Trainer
    snap, out, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
    with strategy.scope():
        conv = keras.layers.Conv2D(4, 3, padding='same', use_bias=False)
        bn = keras.layers.BatchNormalization(momentum=0.9)
        head = keras.layers.Conv2D(3, 1)
        inp = keras.Input((8, 8, 3))
        model = keras.Model(inp, head(keras.layers.ReLU()(bn(conv(inp)))))
    set_original_name(conv.kernel, 'net/conv1/weights')
    set_original_name(head.kernel, 'net/block5/fc/weights')
    images = np.random.RandomState(0).randn(10, 8, 8, 3).astype(np.float32)
    labels = np.random.RandomState(1).randint(0, 3, (10, 8, 8)).astype(np.int32)

    def dataset_fn(ctx):
        ds = tf.data.Dataset.from_tensor_slices({'image': images, 'label': labels}).repeat()
        ds = ds.shuffle(7, seed=3).map(lambda d: dict(d, image=tf.image.random_flip_left_right(d['image'], seed=5)))
        return ds.batch(2, drop_remainder=True)

    def loss_fn(model, batch, training):
        logits = model(batch['image'], training=training)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=batch['label'], logits=logits)
        return {'seg_loss': tf.reduce_mean(ce)}, logits

    def hook(step, metrics):
        if step == kill_at:
            print('KILL-ME', flush=True)
            time.sleep(600)

    cfg = TrainConfig(num_steps=20, learning_rate=0.05, iter_size=2, save_pred_every=5, update_tb_every=10,
                      snapshot_dir=snap, save_last=True, progress=False)
    trainer = Trainer(model, loss_fn, dataset_fn, cfg, strategy=strategy, hooks=[hook])
    trainer.train()
    print('STATUS', trainer.restore_status, flush=True)
    np.savez(out, *[v.numpy() for v in model.variables])
''')


@pytest.mark.slow
def test_kill_and_resume_matches_uninterrupted_run(tmp_path):
    script = tmp_path / 'run.py'
    script.write_text(KILL_SCRIPT)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))

    def start(name, kill_at):
        return subprocess.Popen([sys.executable, str(script), str(tmp_path / name), str(tmp_path / f'{name}.npz'),
                                 str(kill_at)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env, cwd=str(tmp_path))

    reference = start('full', -1)
    victim = start('killed', 12)  # checkpoints at 5 and 10 exist when it is killed during step 12
    deadline = time.time() + 240
    lines = []
    for line in victim.stdout:
        lines.append(line)
        if 'KILL-ME' in line or time.time() > deadline:
            break
    assert any('KILL-ME' in line for line in lines), ''.join(lines)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert tf.train.latest_checkpoint(str(tmp_path / 'killed')).endswith('model.ckpt-10')

    resumed = start('killed', -1)
    out_resumed, _ = resumed.communicate(timeout=240)
    out_reference, _ = reference.communicate(timeout=240)
    assert resumed.returncode == 0, out_resumed
    assert reference.returncode == 0, out_reference
    assert 'STATUS resumed' in out_resumed and 'STATUS fresh' in out_reference
    full, again = np.load(tmp_path / 'full.npz'), np.load(tmp_path / 'killed.npz')
    assert len(full.files) == 7
    for key in full.files:
        np.testing.assert_allclose(again[key], full[key], rtol=0, atol=1e-6, err_msg=key)


def test_full_disk_during_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    """The write of model.ckpt-4 dies half-way with ENOSPC: a clear error, model.ckpt-2 stays the readable latest
    checkpoint, nothing of the failed write is left, and a restart resumes from step 3 to the uninterrupted result."""
    import errno
    from common.train.engine import CheckpointWriteError

    def make(snapshot_dir):
        strategy = make_strategy(devices=['/cpu:0'])
        return Trainer(_linear_model(strategy), _mse_loss, _xy_dataset,
                       _config(num_steps=5, save_pred_every=2, snapshot_dir=str(snapshot_dir)), strategy=strategy)

    reference = make(tmp_path / 'full')
    reference.train()
    expected = reference.model.variables[0].numpy()

    trainer = make(tmp_path / 'disk')
    real_write = trainer.checkpoint._write

    def write_until_the_disk_is_full(prefix, options=None):
        if not prefix.endswith('-4'):
            return real_write(prefix, options=options)
        real_write(prefix)  # the shards, without the manager's state-file callback ...
        data = tf.io.gfile.glob(prefix + '.data-*')[0]
        with open(data, 'r+b') as handle:  # ... of which only half reached the disk
            handle.truncate(os.path.getsize(data) // 2)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), data)

    trainer.checkpoint._write = write_until_the_disk_is_full
    with pytest.raises(CheckpointWriteError, match=r'model\.ckpt-4 failed .*No space left on device.*the previous '
                                                   r'checkpoint .*model\.ckpt-2 is intact'):
        trainer.train()
    snapshot = str(tmp_path / 'disk')
    assert tf.train.latest_checkpoint(snapshot).endswith('model.ckpt-2')
    assert not tf.io.gfile.glob(os.path.join(snapshot, 'model.ckpt-4*'))
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(snapshot))
    assert reader.get_tensor(ck.variable_key('net/fc/weights')).shape == (3, 1)

    restarted = make(tmp_path / 'disk')
    restarted.train()
    assert restarted.restore_status == 'resumed'
    np.testing.assert_allclose(restarted.model.variables[0].numpy(), expected, rtol=0, atol=1e-6)
    assert tf.train.latest_checkpoint(snapshot).endswith('model.ckpt-4')


def test_unwritable_snapshot_dir_is_named(tmp_path):
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    strategy = make_strategy(devices=['/cpu:0'])
    trainer = Trainer(_linear_model(strategy), _mse_loss, _xy_dataset,
                      _config(snapshot_dir=str(blocker / 'snapshots')), strategy=strategy)
    with pytest.raises(OSError, match=r'--snapshot-dir .*a_file/snapshots: cannot write to the output folder'):
        trainer.train()
