"""segsort.train: the reduced model learns on synthetic data (loss falls, prototypes classify held-out pixels),
multi-replica training equals single-device training on the global batch, bad flags and inputs fail clearly."""
import os
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

import segsort.train as segsort_train
from common.cli import normalize_flag_names

REDUCED_MODEL = ['--backbone_filters=8,16,32,64', '--backbone_blocks=1,1,1,1', '--psp_channels=32',
                 '--bn_decay=0.9']


def parse_train_flags(argv, unsupervised=False):
    flag_values = flags.FlagValues()
    segsort_train.define_flags(flag_values, unsupervised=unsupervised)
    flag_values(normalize_flag_names(['segsort.train'] + list(argv)))
    return flag_values


def train_argv(voc, num_steps, extra=()):
    return [f'--data_dir={voc}/VOCdevkit/', f'--data_list={voc}/dataset/voc12/train+.txt', '--batch_size=4',
            '--input_size=48,48', '--iter_size=1', '--is_training', '--learning_rate=1e-2',
            f'--num_steps={num_steps}', f'--save_pred_every={num_steps}', '--update_tb_every=1000',
            '--random_seed=0', '--noprogress', '--embedding_dim=16', '--num_clusters=3', '--random_mirror',
            '--random_crop'] + REDUCED_MODEL + list(extra)


@pytest.mark.slow
def test_supervised_training_learns_prototypes_that_classify_held_out_pixels(synthetic_voc):
    from PIL import Image

    from common.data.lists import read_labeled_image_list
    from common.infer.outputs import load_image
    from segsort.extract_prototypes import image_prototypes, stitched_embedding
    from segsort.eval_utils import k_nearest_neighbors

    losses = []
    cfg = parse_train_flags(train_argv(synthetic_voc, 60, ['--deterministic', '--batch_size=8']))
    trainer = segsort_train.build_trainer(cfg, hooks=[lambda step, m: losses.append(m['seg_loss'])])
    trainer.train()
    losses = np.array(losses)
    assert np.isfinite(losses).all()
    assert losses[-10:].mean() < 0.8 * losses[:5].mean(), losses

    # Prototypes from the training images, kNN labels (k=3) for every pixel of the held-out (val) images, with the
    # inference graph (moving BN statistics; --bn_decay 0.9 lets them settle within the short run). Chance = 1/classes.
    model = segsort_train.build_embedding_model(cfg, [48, 48], training=False)
    model.set_weights(trainer.model.get_weights())
    feats, labels = [], []
    for image_path, label_path in zip(*read_labeled_image_list(f'{synthetic_voc}/VOCdevkit/',
                                                               f'{synthetic_voc}/dataset/voc12/train+.txt')):
        embedding = stitched_embedding(load_image(image_path), model, (48, 48), (32, 32), 16)
        f, lab = image_prototypes(embedding, np.asarray(Image.open(label_path)), 3, 10, input_size=(48, 48))
        feats.append(f)
        labels.append(lab)
    feats, labels = np.concatenate(feats), np.concatenate(labels)
    recalls = {}
    for image_path, label_path in zip(*read_labeled_image_list(f'{synthetic_voc}/VOCdevkit/',
                                                               f'{synthetic_voc}/dataset/voc12/val.txt')):
        embedding = stitched_embedding(load_image(image_path), model, (48, 48), (32, 32), 16)
        _, nearest = tf.nn.top_k(embedding.reshape(-1, 16) @ feats.T, k=3)
        pred = k_nearest_neighbors(nearest, labels).numpy().reshape(embedding.shape[:2])
        gt = np.asarray(Image.open(label_path))
        for c in np.unique(gt[gt != 255]):
            hits, total = recalls.get(c, (0, 0))
            recalls[c] = (hits + np.sum(pred[gt == c] == c), total + np.sum(gt == c))
    balanced_accuracy = np.mean([h / t for h, t in recalls.values()])
    chance = 1.0 / len(recalls)
    assert balanced_accuracy > 2 * chance, (balanced_accuracy, chance)  # measured: 0.28 vs chance 0.10


def _replica_step(devices, batch, cfg, num_steps=1):
    """`num_steps` engine steps of a 1-conv 'network' under a strategy over `devices`.

    Returns (kernel after, last loss, memory bank variables after as NumPy arrays; [] without banks).
    """
    import keras

    from common.train.engine import TrainConfig, Trainer
    from common.train.strategy import make_strategy
    from segsort.losses import MemoryBank
    strategy = make_strategy(devices=devices)
    memory_bank = None
    with strategy.scope():
        keras.utils.set_random_seed(0)
        inputs = keras.Input([8, 8, 3])
        model = keras.Model(inputs, keras.layers.Conv2D(6, 3, padding='same', name='embedding')(inputs))
        if cfg.num_banks:
            memory_bank = MemoryBank(cfg.num_banks, cfg.num_clusters ** 2 * 4, cfg.embedding_dim,
                                     fifo=cfg.fifo_memory, seed=0)

    def dataset_fn(ctx):
        return tf.data.Dataset.from_tensor_slices(batch).batch(ctx.get_per_replica_batch_size(4)).repeat()

    config = TrainConfig(num_steps=num_steps, iter_size=1, learning_rate=0.1, l2_loss=False, progress=False)
    extra = memory_bank.all_variables if memory_bank is not None else []
    trainer = Trainer(model, segsort_train.make_loss_fn(cfg, memory_bank=memory_bank), dataset_fn, config,
                      strategy=strategy, extra_variables=extra)
    metrics = trainer.train()
    return model.get_weights()[0], metrics['seg_loss'], [np.asarray(v.numpy()) for v in extra]


@pytest.mark.parametrize('num_banks, fifo_memory', [(0, False), (2, False), (2, True)],
                         ids=['no-memory', 'inert-memory', 'fifo-memory'])
def test_multi_replica_loss_is_the_global_batch_loss(num_banks, fifo_memory):
    # Every loss term on 2 replicas equals 1 device on the global batch: k-means segments and the NCA likelihood,
    # the inert memory bank in the denominator, and the FIFO bank, whose update after step 1 (the batch's
    # prototypes) enters the step-2 loss and must leave the same banks on both set-ups.
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=[4, 8, 8, 1]).astype(np.int32)
    labels[1, :2] = 255
    from segsort.clustering import generate_location_features, initialize_cluster_labels
    grid = initialize_cluster_labels([2, 2], [8, 8]).numpy()[None, ..., None]
    batch = (rng.normal(size=[4, 8, 8, 3]).astype(np.float32), labels,
             np.broadcast_to(grid, labels.shape).astype(np.int32),
             np.broadcast_to(generate_location_features([8, 8], 'float').numpy()[None], [4, 8, 8, 2]).copy())
    cfg = SimpleNamespace(embedding_dim=6, ignore_label=255, concentration=10.0, num_clusters=2, kmeans_iterations=3,
                          num_banks=num_banks, fifo_memory=fifo_memory)
    num_steps = 2 if num_banks else 1
    one_kernel, one_loss, one_memory = _replica_step(['/cpu:0'], batch, cfg, num_steps)
    two_kernel, two_loss, two_memory = _replica_step(['/cpu:0', '/cpu:1'], batch, cfg, num_steps)
    np.testing.assert_allclose(two_loss, one_loss, rtol=1e-5)
    np.testing.assert_allclose(two_kernel, one_kernel, rtol=1e-4, atol=1e-6)
    assert len(one_memory) == len(two_memory) == (0 if not num_banks else 2 * num_banks + fifo_memory)
    for one, two in zip(one_memory, two_memory):
        np.testing.assert_allclose(two, one, rtol=1e-4, atol=1e-6)
    if fifo_memory:
        newest_labels = one_memory[2 * num_banks - 1]
        assert set(newest_labels) <= {0, 1, 2} and (newest_labels > 0).any()  # this batch's segments arrived
        assert one_memory[-1] == num_steps  # one update per step
        # the oldest bank holds step 1's prototypes (unit rows), not its random initial rows any more
        np.testing.assert_allclose(np.linalg.norm(one_memory[0][:16], axis=1), 1.0, rtol=1e-5)
    elif num_banks:
        assert not np.any(one_memory[num_banks:2 * num_banks])  # inert: labels stay 0


def test_loss_impl_flag_kernel_and_tensorflow_train_alike():
    """--loss_impl: the C++ kernels and the TF ops give the same losses and weights over two engine steps."""
    assert parse_train_flags(['--loss_impl=tf']).loss_impl == 'tf'
    assert parse_train_flags([]).loss_impl == 'auto'
    with pytest.raises(flags.IllegalFlagValueError):
        parse_train_flags(['--loss_impl=fast'])
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, size=[4, 8, 8, 1]).astype(np.int32)
    labels[2, 3:] = 255
    from segsort.clustering import generate_location_features, initialize_cluster_labels
    grid = initialize_cluster_labels([2, 2], [8, 8]).numpy()[None, ..., None]
    batch = (rng.normal(size=[4, 8, 8, 3]).astype(np.float32), labels,
             np.broadcast_to(grid, labels.shape).astype(np.int32),
             np.broadcast_to(generate_location_features([8, 8], 'float').numpy()[None], [4, 8, 8, 2]).copy())
    results = {}
    for impl in ('tf', 'kernel'):
        cfg = SimpleNamespace(embedding_dim=6, ignore_label=255, concentration=10.0, num_clusters=2,
                              kmeans_iterations=3, num_banks=2, fifo_memory=False, loss_impl=impl)
        results[impl] = _replica_step(['/cpu:0'], batch, cfg, num_steps=2)
    np.testing.assert_allclose(results['kernel'][1], results['tf'][1], rtol=1e-5)
    np.testing.assert_allclose(results['kernel'][0], results['tf'][0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('extra, message', [
    (['--num_clusters=7'], r'--num_clusters 7 does not fit the crop: --input_size 48,48 gives a 6-pixel'),
    (['--num_clusters=17', '--input_size=144,144'], r'289 clusters per image exceed'),
    (['--num_banks=-1'], r'--num_banks must be >= 0'),
])
def test_bad_flags_name_the_flag(synthetic_voc, extra, message):
    cfg = parse_train_flags(train_argv(synthetic_voc, 2, extra))
    with pytest.raises(ValueError, match=message):
        segsort_train.build_trainer(cfg)


def test_unsupervised_training_names_missing_over_segmentation(synthetic_voc, tmp_path):
    line = open(f'{synthetic_voc}/dataset/voc12/train.txt').readline()
    data_list = tmp_path / 'one.txt'
    data_list.write_text(line)
    hed_dir = tmp_path / 'hed'
    hed_dir.mkdir()
    argv = [a for a in train_argv(synthetic_voc, 2, [f'--data_list={data_list}', f'--hed_dir={hed_dir}'])
            if not a.startswith('--num_clusters')]
    cfg = parse_train_flags(argv, unsupervised=True)
    trainer = segsort_train.build_trainer(cfg, unsupervised=True)
    missing = os.path.join(str(hed_dir), os.path.basename(line.split()[1]))
    with pytest.raises(FileNotFoundError, match=f'HED over-segmentation file not found: {missing}'):
        trainer.dataset_fn(tf.distribute.InputContext())
