"""SegSort training on the common engine: supervised (`train_segsort.py`, `train_segsort_mgpu.py`) and
unsupervised (`train_segsort_unsup.py`, see `segsort.train_unsup`).

    python -m segsort.train --data_dir VOCdevkit/ --data_list dataset/voc12/train+.txt \
        --restore_from resnet_v1_101.ckpt --not_restore_classifier --is_training --random_mirror --random_scale \
        --random_crop --batch_size 8 --input_size 336,336 --learning_rate 2e-3 --num_steps 30001 \
        --save_pred_every 30000 --update_tb_every 50 --iter_size 1 --embedding_dim 32 --concentration 10 \
        --num_clusters 5 --kmeans_iterations 10 --num_banks 2 --snapshot_dir snapshots/segsort/stage1

Flags keep the originals' names and defaults (underscores; hyphens are accepted too). One program serves one or
many devices (`--num_gpu`): with several replicas every replica all-gathers the embeddings, labels, clusters and
locations of the global batch and computes the loss on it, as the multi-GPU original computes one loss on the
concatenated tower outputs; the update equals single-device training on the whole batch (sync batch norm).
`--strategy multi_worker` trains on several machines (TF_CONFIG; the strategy is made before anything touches the
runtime, only the chief writes); tests/common/train/test_multi_worker.py proves it on 2 processes, kill and resume.

Differences from the originals (defaults faithful unless stated):
  * `--fifo_memory`: the memory bank is updated first-in-first-out; the default keeps the original's inert random
    memory (Q-S1).
  * an empty `--restore_from` trains from scratch (the original crashed, Q-A7); one that leaves model variables
    uninitialised is an error listing them (as the TF1 Saver) unless `--allow_partial_restore`.
  * a batch without valid pixels gives loss 0 instead of NaN; a NaN loss stops training with a message.
"""
import os

import tensorflow as tf
from absl import flags, logging

from common.cli import run_app
from common.data.aaf_reader import IMG_MEAN, shrink_labels
from common.data.pipeline import build_segmentation_dataset
from common.models.factory import parse_int_list
from common.train.engine import TrainConfig, Trainer
from common.train.optimizers import aaf_variable_groups
from common.train.strategy import strategy_from_flags
from segsort.losses import MemoryBank, add_segsort_loss, add_unsupervised_segsort_loss
from segsort.model import build_embedding_model, define_embedding_flags

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS, unsupervised=False):
    """The originals' SegSort training flags (aaf_segsort.md 1.3) plus the port's options.

    Args:
      flag_values: absl FlagValues (default the global FLAGS; tests pass a fresh one).
      unsupervised: the flag set of `train_segsort_unsup.py` (no k-means / memory flags, HED reader).
    """
    fv = dict(flag_values=flag_values)
    define = {int: flags.DEFINE_integer, float: flags.DEFINE_float, str: flags.DEFINE_string,
              bool: flags.DEFINE_boolean}
    table = [
        ('batch_size', 1, 'Global number of images per step.'),
        ('data_dir', '', 'Prefix joined to the list entries by plain concatenation (keep the "/").'),
        ('data_list', '', 'List file of "<image> <label>" lines.'),
        ('ignore_label', 255, 'Label of pixels left out of the loss (and the crop padding value).'),
        ('input_size', '336,336', 'Training crop "H,W" (PSPNet: square, multiple of 48).'),
        ('random_seed', 1234, 'Seed of the initial weights, the memory bank and the data pipeline.'),
        ('is_training', False, 'Make convolution weights trainable (every original script passes it).'),
        ('use_global_status', False, 'BN uses moving statistics and beta/gamma are frozen.'),
        ('learning_rate', 2.5e-4 if unsupervised else 1e-3, 'Base learning rate of the poly schedule.'),
        ('power', 0.9, 'Poly schedule exponent.'),
        ('momentum', 0.9, 'TF1 momentum.'),
        ('weight_decay', 5e-4, 'L2 coefficient on convolution kernels.'),
        ('num_classes', 21, 'Number of classes (labels outside [0, num_classes) and != ignore_label are bad '
                            'samples).'),
        ('num_steps', 20000, 'Training steps (the loop runs 0..num_steps-1).'),
        ('iter_size', 10, 'Optimizer updates per step, each on a new batch (the original meaning).'),
        ('accumulate_gradients', False, 'Average iter_size gradients into ONE update instead.'),
        ('random_mirror', False, 'Random left-right flips.'),
        ('random_crop', False, 'Random (instead of centre) crops.'),
        ('random_scale', False, 'Random scaling in [0.5, 2.0).'),
        ('restore_from', '', 'Initial weights: ImageNet TF-Slim checkpoint or a stage-1 checkpoint.'),
        ('save_pred_every', 10000, 'Save model.ckpt-<step> when step % N == 0 and step > 0.'),
        ('update_tb_every', 20, 'TensorBoard summaries every N steps.'),
        ('snapshot_dir', '', 'Checkpoints, TensorBoard events and the run config.'),
        ('not_restore_classifier', False, 'Do not restore block5 (the PSP head and the embedding layer).'),
        ('allow_partial_restore', False, 'Let --restore_from leave model variables that the checkpoint lacks at '
                                         'their initial values (default: an error listing them; the original TF1 '
                                         'Saver failed on them too).'),
        ('concentration', 10.0, 'vMF concentration kappa.'),
        ('num_gpu', 1, 'Replicas (GPUs); the loss is computed on the all-gathered global batch.'),
        ('deterministic', False, 'Deterministic ops and data order (exact resume; slower).'),
        ('skip_bad_samples', False, 'Log and skip unreadable / inconsistent samples.'),
        ('max_to_keep', 10, 'Checkpoints kept.'),
        ('progress', True, 'Show a progress bar.'),
    ]
    if unsupervised:
        table.append(('hed_dir', '', 'Directory of the over-segmentation PNGs named like the labels (fixes Q-S2); '
                                     'empty = the original label.replace("segcls", "hed").'))
    else:
        table += [('num_banks', 2, 'Memory banks of prototypes (0 = none).'),
                  ('fifo_memory', False, 'Update the memory banks first-in-first-out (the original never updates '
                                         'them, Q-S1).')]
    for name, default, help_text in table:
        define[type(default)](name, default, help_text, **fv)
    flags.DEFINE_enum('strategy', 'auto', ['auto', 'one_device', 'mirrored', 'multi_worker', 'tpu'],
                      'tf.distribute strategy; auto = one device or MirroredStrategy by --num_gpu.', **fv)
    if not unsupervised:
        flags.DEFINE_enum('loss_impl', 'auto', ['auto', 'kernel', 'tf'],
                          'SegSort loss implementation: the compiled C++ CPU ops (k-means, NCA likelihood with its '
                          'gradient), the TensorFlow ops, or auto = the C++ ops on CPU when they build.', **fv)
    define_embedding_flags(flag_values, kmeans=not unsupervised)


def check_flags(cfg, unsupervised=False):
    """Errors naming the flag, before anything is built. Returns the parsed input size."""
    if not cfg.data_list:
        raise ValueError('--data_list is required (a list file of "<image> <label>" lines)')
    if not os.path.isfile(cfg.data_list):
        raise FileNotFoundError(f'--data_list: list file not found: {cfg.data_list}')
    if cfg.batch_size < 1:
        raise ValueError(f'--batch_size must be >= 1, got {cfg.batch_size}')
    input_size = parse_int_list(cfg.input_size, 'input_size', 2)
    if not unsupervised:
        check_num_clusters(cfg.num_clusters, input_size)
        if cfg.num_banks < 0:
            raise ValueError(f'--num_banks must be >= 0, got {cfg.num_banks}')
    return input_size


def check_num_clusters(num_clusters, input_size, flag='input_size'):
    """--num_clusters must give a grid with num_clusters cells per axis on the 1/8-resolution embedding.

    The k-means keeps num_clusters**2 clusters; cluster and image ids share one key (`image * 256 + cluster`), so
    more than 256 clusters per image would mix images.
    """
    if num_clusters < 1:
        raise ValueError(f'--num_clusters must be >= 1, got {num_clusters}')
    if num_clusters * num_clusters > 256:
        raise ValueError(f'--num_clusters {num_clusters}: {num_clusters ** 2} clusters per image exceed the 256 the '
                         f'segment ids can hold')
    side = min(-(-int(s) // 8) for s in input_size)
    if num_clusters > side:
        raise ValueError(f'--num_clusters {num_clusters} does not fit the crop: --{flag} {input_size[0]},'
                         f'{input_size[1]} gives a {side}-pixel embedding side, fewer than {num_clusters} grid '
                         f'cells')


def _all_gather(tensors):
    """The global batch on every replica (identity on one replica)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return tensors
    return [ctx.all_gather(t, axis=0) for t in tensors]


def make_loss_fn(cfg, unsupervised=False, memory_bank=None):
    """Per-replica loss of the engine contract: {'seg_loss': loss of the global batch}, embedding."""

    def loss_fn(model, batch, training):
        images = batch[0]
        embedding = model(images, training=training)
        size = embedding.shape[1:3]
        if unsupervised:
            clusters = shrink_labels(batch[2], size)
            embedding_all, clusters = _all_gather([embedding, clusters])
            loss = add_unsupervised_segsort_loss(tf.cast(embedding_all, tf.float32), cfg.concentration, clusters)
        else:
            labels, clusters, locations = (shrink_labels(t, size) for t in batch[1:4])
            embedding_all, labels, clusters, locations = _all_gather([embedding, labels, clusters, locations])
            loss = add_segsort_loss(tf.cast(embedding_all, tf.float32), labels, cfg.embedding_dim, cfg.ignore_label,
                                    cfg.concentration, clusters, cfg.num_clusters, cfg.kmeans_iterations,
                                    cfg.num_banks, locations, memory_bank=memory_bank,
                                    impl=getattr(cfg, 'loss_impl', 'auto'))
        return {'seg_loss': loss}, embedding

    return loss_fn


def build_trainer(cfg, hooks=(), unsupervised=False):
    """Checks the flags and builds a `common.train.engine.Trainer` (run it with `.train()`).

    Args:
      cfg: parsed flags of `define_flags` (absl FlagValues or an object with the same attributes and
        `flag_values_dict()`).
      hooks: engine hooks `hook(step, metrics)`.
      unsupervised: train_segsort_unsup.py (HED over-segmentations, no labels in the loss).
    Returns:
      the Trainer; the memory bank (supervised, num_banks > 0) is `trainer.extra_variables`.
    """
    input_size = check_flags(cfg, unsupervised)
    # First thing that may touch the runtime: multi-worker collectives must be configured before it starts.
    strategy = strategy_from_flags(cfg.num_gpu, cfg.strategy)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    if cfg.batch_size % strategy.num_replicas_in_sync:
        raise ValueError(f'--batch_size {cfg.batch_size} is not divisible by the {strategy.num_replicas_in_sync} '
                         f'replicas')
    tf.keras.utils.set_random_seed(cfg.random_seed)
    memory_bank = None
    with strategy.scope():
        model = build_embedding_model(cfg, input_size, training=cfg.is_training,
                                      use_global_status=cfg.use_global_status,
                                      synchronized=strategy.num_replicas_in_sync > 1)
        if not unsupervised and cfg.num_banks > 0:
            memory_bank = MemoryBank(cfg.num_banks, cfg.num_clusters ** 2 * cfg.batch_size, cfg.embedding_dim,
                                     fifo=cfg.fifo_memory, seed=cfg.random_seed)
    logging.info('model %s: %d variables, %d trainable', model.name, len(model.variables),
                 len(model.trainable_variables))

    def dataset_fn(input_context):
        reader_kwargs = (dict(reader='segsort_unsup', hed_dir=cfg.hed_dir or None) if unsupervised
                         else dict(reader='segsort', num_clusters=[cfg.num_clusters, cfg.num_clusters]))
        return build_segmentation_dataset(
            cfg.data_dir, cfg.data_list, input_size, cfg.batch_size, random_scale=cfg.random_scale,
            random_mirror=cfg.random_mirror, random_crop=cfg.random_crop, ignore_label=cfg.ignore_label,
            img_mean=IMG_MEAN, num_classes=cfg.num_classes, seed=cfg.random_seed, deterministic=cfg.deterministic,
            skip_bad_samples=cfg.skip_bad_samples, input_context=input_context, **reader_kwargs)

    config = TrainConfig.from_flags(cfg.flag_values_dict(), image_mean=tuple(IMG_MEAN),
                                    strict_restore=not cfg.allow_partial_restore)
    extra_variables = memory_bank.all_variables if memory_bank is not None else []
    return Trainer(model, make_loss_fn(cfg, unsupervised, memory_bank), dataset_fn, config, strategy=strategy,
                   extra_variables=extra_variables, variable_groups=aaf_variable_groups(), hooks=hooks,
                   run_flags=cfg.flag_values_dict())


def train_from_flags(cfg, hooks=(), unsupervised=False):
    """Builds (`build_trainer`) and runs a training; returns the engine's final metrics dict."""
    metrics = build_trainer(cfg, hooks=hooks, unsupervised=unsupervised).train()
    logging.info('training finished: %s', metrics)
    return metrics


def run(unsupervised=False):
    """Console script `segsort-train` (and `segsort-train-unsup` with unsupervised=True)."""
    define_flags(unsupervised=unsupervised)

    def main(argv):
        del argv
        train_from_flags(FLAGS, unsupervised=unsupervised)

    run_app(main)


if __name__ == '__main__':
    run()
