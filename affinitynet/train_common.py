"""The training loop shared by train_cls and train_aff: PSA's PolyOptimizer (torch SGD with momentum = weight
decay, poly power 0.9 frozen after max_step, parameter groups x1/x2/x10/x20) on `common.train.engine`, which
resumes from the last checkpoint, stops on a NaN loss and writes TensorBoard summaries."""
import os

from absl import flags

from common.train import engine
from common.train.optimizers import poly_optimizer


def define_training_flags(flag_values, batch_size, max_epoches, session_name):
    """The originals' training flags plus ours (--max_steps, --snapshot_dir, --save_every,
    --intended_momentum, --seed, --bn_decay, --dropout)."""
    flags.DEFINE_integer('batch_size', batch_size, 'Batch size.', flag_values=flag_values)
    flags.DEFINE_integer('max_epoches', max_epoches, 'Epochs (max_step = len(list)//batch_size * epochs).',
                         flag_values=flag_values)
    flags.DEFINE_float('lr', 0.1, 'Base learning rate (new layers x10).', flag_values=flag_values)
    flags.DEFINE_integer('num_workers', 8, 'Kept for compatibility (tf.data autotunes).', flag_values=flag_values)
    flags.DEFINE_float('wt_dec', 5e-4, 'Weight decay (also the SGD momentum, as the original).',
                       flag_values=flag_values)
    flags.DEFINE_string('weights', None, 'Initial weights: ImageNet .params / .caffemodel, or .pth / .npz; '
                        '"" trains from scratch (ours).', flag_values=flag_values)
    flags.DEFINE_string('train_list', 'voc12/train_aug.txt', 'PSA training list.', flag_values=flag_values)
    flags.DEFINE_string('val_list', 'voc12/val.txt', 'PSA validation list.', flag_values=flag_values)
    flags.DEFINE_string('session_name', session_name, 'Output weights <session_name>.npz.', flag_values=flag_values)
    flags.DEFINE_integer('crop_size', 448, 'Training crop side.', flag_values=flag_values)
    flags.DEFINE_string('voc12_root', None, 'VOC2012 directory.', flag_values=flag_values)
    flags.DEFINE_integer('max_steps', 0, 'Override max_step (0 = from the epochs).', flag_values=flag_values)
    flags.DEFINE_string('snapshot_dir', None, 'Checkpoints to resume from (default <session_name>_ckpt).',
                        flag_values=flag_values)
    flags.DEFINE_integer('save_every', 0, 'Checkpoint every N steps (0 = once per epoch).', flag_values=flag_values)
    flags.DEFINE_boolean('intended_momentum', False, 'SGD momentum 0.9 instead of the original\'s 5e-4 '
                         '(positional-argument quirk).', flag_values=flag_values)
    flags.DEFINE_integer('seed', 0, 'Seed of initialisation and data order.', flag_values=flag_values)
    flags.DEFINE_float('bn_decay', None, 'ResNet-38 only: train batch norm (batch statistics, moving averages with '
                       'this decay, e.g. 0.9) instead of the original\'s frozen BN; for training from scratch '
                       '(ours; unset = the original).', flag_values=flag_values)
    flags.DEFINE_boolean('dropout', True, 'ResNet-38 only: --nodropout sets the b6/b7 (and the classifier\'s '
                         'dropout7) rates to 0, for tiny widths trained from scratch, where dropping whole channels '
                         'of a few-dozen-channel layer drowns the signal (ours; default = the original).',
                         flag_values=flag_values)
    flags.DEFINE_enum('strategy', 'auto', ['auto', 'one_device', 'mirrored', 'multi_worker', 'tpu'],
                      'tf.distribute strategy (ours): auto = every visible GPU (as the original\'s DataParallel), '
                      'else the CPU; multi_worker = several machines from TF_CONFIG (only the chief writes).',
                      flag_values=flag_values)
    flags.DEFINE_boolean('layout_independent_data', False, 'Seed each sample\'s augmentation by (seed, epoch, list '
                         'position) instead of (seed, input pipeline, running index), so any number of workers '
                         'draws the same samples (ours; multi-worker runs that must equal one process).',
                         flag_values=flag_values)


def make_strategy_first(f):
    """The strategy of `--strategy`, made before anything touches the TensorFlow runtime (multi-worker needs it)."""
    from common.train.strategy import strategy_from_flags
    return strategy_from_flags(None, f.strategy)


def run_training(model, loss_fn, dataset_fn, f, num_images, scratch_prefixes, strategy=None, hooks=()):
    """Trains `model` with PSA's optimizer; saves `<session_name>.npz` (on the chief only). Returns the engine's
    metrics.

    Args:
      strategy: the strategy the model was built under (default: the current one).
      hooks: engine hooks `hook(step, metrics)`.
    """
    from affinitynet.model import save_weights
    from common.io import check_writable_dir
    from common.train.strategy import is_chief
    steps_per_epoch = num_images // f.batch_size
    if steps_per_epoch < 1 and not f.max_steps:
        raise ValueError(f'--batch_size {f.batch_size} exceeds the {num_images} images of --train_list')
    max_step = f.max_steps or steps_per_epoch * f.max_epoches
    snapshot_dir = f.snapshot_dir or f.session_name + '_ckpt'
    if is_chief(strategy):  # the weights are written after training: a folder that cannot take them fails now
        check_writable_dir(os.path.dirname(os.path.abspath(f.session_name)), '--session_name')
    config = engine.TrainConfig(
        num_steps=max_step, learning_rate=f.lr, power=0.9, weight_decay=f.wt_dec, iter_size=1,
        save_pred_every=f.save_every or max(1, steps_per_epoch), save_last=True, update_tb_every=50,
        snapshot_dir=snapshot_dir, optimizer='torch_sgd', freeze_lr_after_end=True, l2_loss=False)
    optimizer = poly_optimizer(f.wt_dec, scratch_prefixes, momentum=0.9, intended_momentum=f.intended_momentum)
    metrics = engine.train(model, loss_fn, dataset_fn, config, strategy=strategy, optimizer=optimizer,
                           hooks=hooks, run_flags=f.flag_values_dict())
    if not is_chief(strategy):
        return metrics
    save_weights(model, f.session_name + '.npz')
    print(f'saved {f.session_name}.npz after {metrics.get("step")} steps, loss {metrics.get("loss")}')
    return metrics


def initial_weights(model, path):
    """The originals' start: load_state_dict(strict=False) of ImageNet / earlier weights; '' = from scratch."""
    from affinitynet.model import load_weights
    if not path:
        print('training from scratch (no --weights)')
        return
    restored, missing, _ = load_weights(model, path, strict=False)
    if not restored:
        raise ValueError(f'--weights {path}: no tensor matches the model')
    print(f'loaded {len(restored)} tensors from {path}; {len(missing)} keep their initialisation')
