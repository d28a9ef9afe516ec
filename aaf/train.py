"""AAF training: PSPNet trained with softmax cross-entropy, plus the affinity field loss or adaptive affinity fields.

One program for the originals' six scripts (`train.py`, `train_affinity.py`, `train_aaf.py` and their `_mgpu`
versions): `--mode baseline|affinity|aaf` picks the loss, `--num_gpu` (or `--strategy`) the replicas. Flags keep the
originals' names and defaults; both `--batch-size` and `--batch_size` spellings work.

    python -m aaf.train --mode aaf --data-dir VOCdevkit/ --data-list dataset/voc12/train+.txt \
        --restore-from resnet_v1_101.ckpt --not-restore-classifier --is-training --random-mirror --random-scale \
        --random-crop --batch-size 8 --input-size 336,336 --learning-rate 1e-3 --num-steps 30001 \
        --kld-margin 3.0 --kld-lambda-1 1.0 --kld-lambda-2 1.0 --snapshot-dir snapshots/aaf/stage1

Differences from the originals, each behind a flag with the original as default where it could matter:
  * the multi-GPU affinity/AAF scripts of the original could not run (Q-A1); here every mode runs on any number of
    replicas. `--loss_reduction tower_mean` reproduces the original multi-GPU weighting (Q-A16) and
    `--kernel_initializer msra_uniform` its multi-GPU initialisation (the `*_mgpu.sh` pipelines pass both); the
    default `global_mean` divides every term, the affinity ones included, by counts summed over all replicas, which
    equals single-device training on the whole batch.
  * an empty `--restore_from` trains from scratch (the original crashed, Q-A7); a `--restore_from` that leaves model
    variables uninitialised is an error listing them unless `--allow_partial_restore`.
  * a `--snapshot_dir` holding a checkpoint resumes from it (`--restore_from` ignored); one at `--num_steps` is a
    finished run: a message, exit 0, nothing written. The original always restarted from `--restore_from`.
  * `--fused_loss` (default) uses the fused affinity op, whose empty edge/non-edge sets contribute 0 instead of the
    original's NaN (Q-A3); `--nofused_loss` runs the literal original formulation.
    `--affinity_impl auto|kernel|xla|reference` picks how the affinity term is computed: unset = `auto` (the
    compiled C++ CPU kernel, else the XLA fused op, e.g. on GPU) with `--fused_loss`, `reference` (the literal
    original) with `--nofused_loss`; `--nofused_loss` with a fused implementation is an error.

From Python (tests, notebooks): define the flags in a fresh `absl.flags.FlagValues` with `define_flags(fv)`, parse
them (`fv(common.cli.normalize_flag_names(argv))`), then `train_from_flags(fv, hooks)` -- or `build_trainer(fv)` to
inspect the model, restore or swap the input pipeline before `trainer.train()`.
"""
import os

import tensorflow as tf
from absl import flags, logging

from common.cli import run_app
from common.data.aaf_reader import IMG_MEAN, shrink_labels
from common.data.pipeline import build_segmentation_dataset
from common.models.factory import define_model_flags, model_from_flags, parse_int_list
from common.train.engine import TrainConfig, Trainer
from common.train.optimizers import aaf_variable_groups
from common.train.strategy import strategy_from_flags

MODES = ('baseline', 'affinity', 'aaf')
FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    """The originals' training flags (aaf_segsort.md 1.1) plus the port's own options.

    Args:
      flag_values: the absl `FlagValues` to define them in (default the global FLAGS; tests pass a fresh one).
    """
    fv = dict(flag_values=flag_values)
    flags.DEFINE_enum('mode', 'baseline', list(MODES), 'baseline = train.py (softmax CE), affinity = '
                      'train_affinity.py, aaf = train_aaf.py.', **fv)
    flags.DEFINE_integer('batch_size', 1, 'Global number of images per step.', **fv)
    flags.DEFINE_string('data_dir', '', 'Prefix joined to the list entries by plain concatenation (keep the "/").',
                        **fv)
    flags.DEFINE_string('data_list', '', 'List file of "<image> <label>" lines.', **fv)
    flags.DEFINE_integer('ignore_label', 255, 'Label padding value; every label > num_classes-1 is ignored.', **fv)
    flags.DEFINE_string('input_size', '336,336', 'Training crop "H,W" (PSPNet: square, multiple of 48).', **fv)
    flags.DEFINE_integer('random_seed', 1234, 'Seed of the initial weights and of the data pipeline.', **fv)
    flags.DEFINE_boolean('is_training', False, 'Make convolution weights trainable (every original script passes '
                         'it).', **fv)
    flags.DEFINE_boolean('use_global_status', False, 'BN uses moving statistics and beta/gamma are frozen.', **fv)
    flags.DEFINE_float('learning_rate', 2.5e-4, 'Base learning rate of the poly schedule.', **fv)
    flags.DEFINE_float('power', 0.9, 'Poly schedule exponent.', **fv)
    flags.DEFINE_float('momentum', 0.9, 'TF1 momentum.', **fv)
    flags.DEFINE_float('weight_decay', 5e-4, 'L2 coefficient on convolution kernels.', **fv)
    flags.DEFINE_integer('num_classes', 21, 'Number of classes.', **fv)
    flags.DEFINE_integer('num_steps', 20000, 'Training steps (the loop runs 0..num_steps-1).', **fv)
    flags.DEFINE_integer('iter_size', 10, 'Optimizer updates per step, each on a new batch (the original meaning).',
                         **fv)
    flags.DEFINE_boolean('accumulate_gradients', False, 'Average iter_size gradients into ONE update instead.', **fv)
    flags.DEFINE_boolean('random_mirror', False, 'Random left-right flips.', **fv)
    flags.DEFINE_boolean('random_crop', False, 'Random (instead of centre) crops.', **fv)
    flags.DEFINE_boolean('random_scale', False, 'Random scaling in [0.5, 2.0).', **fv)
    flags.DEFINE_string('restore_from', '', 'Initial weights: ImageNet TF-Slim checkpoint or a stage-1 checkpoint.',
                        **fv)
    flags.DEFINE_integer('save_pred_every', 10000, 'Save model.ckpt-<step> when step % N == 0 and step > 0.', **fv)
    flags.DEFINE_integer('update_tb_every', 20, 'TensorBoard summaries every N steps.', **fv)
    flags.DEFINE_string('snapshot_dir', '', 'Checkpoints, TensorBoard events and the run config.', **fv)
    flags.DEFINE_boolean('not_restore_classifier', False, 'Do not restore block5 (the PSP head and classifier).', **fv)
    flags.DEFINE_boolean('allow_partial_restore', False, 'Let --restore-from leave model variables that the '
                         'checkpoint lacks at their initial values (default: an error listing them; the original '
                         'TF1 Saver failed on them too).', **fv)
    flags.DEFINE_integer('num_gpu', 1, 'Replicas (GPUs) of a MirroredStrategy; 1 = one device.', **fv)
    flags.DEFINE_enum('strategy', 'auto', ['auto', 'one_device', 'mirrored', 'multi_worker', 'tpu'],
                      'tf.distribute strategy; auto = one device or MirroredStrategy by --num_gpu.', **fv)
    flags.DEFINE_float('kld_margin', None, 'Margin of the edge KL (affinity / aaf modes; 3.0 in the papers).', **fv)
    flags.DEFINE_float('kld_lambda_1', None, 'Weight of the edge term (affinity / aaf modes).', **fv)
    flags.DEFINE_float('kld_lambda_2', None, 'Weight of the non-edge term (affinity / aaf modes).', **fv)
    flags.DEFINE_enum('loss_reduction', 'global_mean', ['global_mean', 'tower_mean'],
                      'global_mean = the single-device loss of the global batch; tower_mean = the original '
                      'multi-GPU image-weighted mean of per-replica means.', **fv)
    flags.DEFINE_boolean('fused_loss', True, 'Fused affinity op (empty sets -> 0); false = the literal original.', **fv)
    flags.DEFINE_enum('affinity_impl', None, ['auto', 'kernel', 'xla', 'reference'],
                      'Affinity-term implementation: auto = C++ kernel on CPU, else XLA op; kernel; xla; reference '
                      '= literal original. Unset: auto, or reference with --nofused_loss.', **fv)
    flags.DEFINE_boolean('deterministic', False, 'Deterministic ops and data order (exact resume; slower).', **fv)
    flags.DEFINE_boolean('mixed_precision', False, 'mixed_float16 compute, float32 losses.', **fv)
    flags.DEFINE_boolean('skip_bad_samples', False, 'Log and skip unreadable / inconsistent samples.', **fv)
    flags.DEFINE_integer('max_to_keep', 10, 'Checkpoints kept.', **fv)
    flags.DEFINE_string('colormap', 'voc', 'Colour map of TensorBoard label images (voc / cityscapes).', **fv)
    flags.DEFINE_boolean('progress', True, 'Show a progress bar.', **fv)
    define_model_flags(flag_values)


def segmentation_loss(logits, labels, num_classes):
    """Softmax cross-entropy summed over valid pixels (label <= num_classes-1) and their count.

    Args:
      logits: [N, h, w, C]; labels: [N, h, w, 1] shrunk to the logits' size.
    Returns:
      (sum of CE, number of valid pixels) -- the engine divides them over the global batch.
    """
    labels = tf.cast(labels[..., 0], tf.int32)
    valid = labels <= num_classes - 1
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.where(valid, labels, 0),
                                                        logits=tf.cast(logits, tf.float32))
    return tf.reduce_sum(tf.where(valid, ce, 0.0)), tf.reduce_sum(tf.cast(valid, tf.float32))


def make_loss_fn(mode, num_classes, num_steps, kld_margin=None, kld_lambda_1=None, kld_lambda_2=None,
                 weights=None, fused=True, impl=None):
    """The per-replica loss of `--mode`: {'seg_loss': (sum, count)} plus 'aff_loss' / 'aaf_loss' as a list of
    (sum, count) ratios, so that `--loss-reduction` reduces every term the same way.

    Returns:
      loss_fn(model, batch, training, step) -> (terms, logits), the engine's contract.
    """
    from aaf.losses import aaf_loss_terms

    def loss_fn(model, batch, training, step):
        images, labels = batch[0], batch[1]
        logits = model(images, training=training)
        labels = shrink_labels(labels, logits.shape[1:3])
        terms = {'seg_loss': segmentation_loss(logits, labels, num_classes)}
        if mode != 'baseline':
            terms.update(aaf_loss_terms(logits, labels, num_classes, step, num_steps, mode=mode,
                                        kld_margin=kld_margin, kld_lambda_1=kld_lambda_1,
                                        kld_lambda_2=kld_lambda_2, weights=weights, fused=fused,
                                        as_ratios=True, impl=impl))
        return terms, logits

    return loss_fn


def check_flags(cfg):
    """Errors that name the flag, before anything is built."""
    if not cfg.data_list:
        raise ValueError('--data-list is required (a list file of "<image> <label>" lines)')
    if not os.path.isfile(cfg.data_list):
        raise FileNotFoundError(f'--data-list: list file not found: {cfg.data_list}')
    if cfg.mode != 'baseline':
        missing = [name for name in ('kld_margin', 'kld_lambda_1', 'kld_lambda_2') if getattr(cfg, name) is None]
        if missing:
            raise ValueError(f'--mode {cfg.mode} needs ' + ', '.join('--' + m.replace('_', '-') for m in missing)
                             + ' (the originals have no defaults; the papers use 3.0, 1.0, 1.0)')
    if cfg.batch_size < 1:
        raise ValueError(f'--batch-size must be >= 1, got {cfg.batch_size}')


def build_trainer(cfg, hooks=()):
    """Checks the flags and builds everything a run needs, without training yet.

    Args:
      cfg: parsed flags of `define_flags` (absl `FlagValues`, or any object with the same attributes and a
        `flag_values_dict()` method).
      hooks: engine hooks, `hook(step, metrics)` after every step (tests use them to record per-step losses).
    Returns:
      a `common.train.engine.Trainer`; `trainer.train()` runs it. The model is `trainer.model`; in aaf mode the
      adversarial weights are `trainer.extra_variables` (edge_w, nonedge_w).
    """
    check_flags(cfg)
    input_size = parse_int_list(cfg.input_size, 'input_size', 2)
    # First thing that may touch the runtime: multi-worker collectives must be configured before it starts.
    # Without GPUs (CPU runs, the synthetic pipelines) --num-gpu falls back to the one CPU device.
    strategy = strategy_from_flags(cfg.num_gpu, cfg.strategy)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    if cfg.mixed_precision:
        import keras
        keras.mixed_precision.set_global_policy('mixed_float16')
    if cfg.batch_size % strategy.num_replicas_in_sync:
        raise ValueError(f'--batch-size {cfg.batch_size} is not divisible by the {strategy.num_replicas_in_sync} '
                         f'replicas')
    tf.keras.utils.set_random_seed(cfg.random_seed)
    extra_variables, weights = [], None
    with strategy.scope():
        model = model_from_flags(cfg, cfg.num_classes, input_size, training=cfg.is_training,
                                 use_global_status=cfg.use_global_status,
                                 synchronized=strategy.num_replicas_in_sync > 1)
        if cfg.mode == 'aaf':
            from aaf.losses import AdaptiveAffinityWeights
            weights = AdaptiveAffinityWeights(cfg.num_classes)
            extra_variables = [weights.edge_w, weights.nonedge_w]
    logging.info('model %s: %d variables, %d trainable', model.name, len(model.variables),
                 len(model.trainable_variables))

    def dataset_fn(input_context):
        return build_segmentation_dataset(
            cfg.data_dir, cfg.data_list, input_size, cfg.batch_size, random_scale=cfg.random_scale,
            random_mirror=cfg.random_mirror, random_crop=cfg.random_crop, ignore_label=cfg.ignore_label,
            img_mean=IMG_MEAN, num_classes=cfg.num_classes, seed=cfg.random_seed, deterministic=cfg.deterministic,
            skip_bad_samples=cfg.skip_bad_samples, input_context=input_context)

    from aaf.losses import resolve_loss_impl
    resolve_loss_impl(cfg.fused_loss, cfg.affinity_impl)  # a --nofused_loss / --affinity_impl clash fails here
    loss_fn = make_loss_fn(cfg.mode, cfg.num_classes, cfg.num_steps, cfg.kld_margin, cfg.kld_lambda_1,
                           cfg.kld_lambda_2, weights=weights, fused=cfg.fused_loss, impl=cfg.affinity_impl)
    config = TrainConfig.from_flags(cfg.flag_values_dict(), image_mean=tuple(IMG_MEAN),
                                    strict_restore=not cfg.allow_partial_restore)
    return Trainer(model, loss_fn, dataset_fn, config, strategy=strategy, extra_variables=extra_variables,
                   variable_groups=aaf_variable_groups(extra_variables), hooks=hooks,
                   run_flags=cfg.flag_values_dict())


def train_from_flags(cfg, hooks=()):
    """Builds (`build_trainer`) and runs a training; returns the engine's final metrics dict."""
    metrics = build_trainer(cfg, hooks=hooks).train()
    logging.info('training finished: %s', metrics)
    return metrics


def main(argv):
    del argv
    # Return nothing: absl's app.run passes main's return value to sys.exit (a dict would exit with status 1).
    train_from_flags(FLAGS)


def _run_with_mode(mode):
    define_flags()
    FLAGS.set_default('mode', mode)
    run_app(main)


def run():
    """Console script `aaf-train` (default --mode baseline)."""
    _run_with_mode('baseline')


def run_affinity():
    """Console script `aaf-train-affinity` (default --mode affinity)."""
    _run_with_mode('affinity')


def run_aaf():
    """Console script `aaf-train-aaf` (default --mode aaf)."""
    _run_with_mode('aaf')


if __name__ == '__main__':
    run()
