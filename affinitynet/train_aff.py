"""Train AffinityNet on the la/ha CRF labels (PSA `train_aff.py`).

    python -m affinitynet.train_aff --network network.resnet38_aff --weights res38_cls.pth \\
        --voc12_root VOC2012 --la_crf_dir crf_la --ha_crf_dir crf_ha --session_name res38_aff

Labels: confident foreground from the la CRF, confident background from the ha CRF, pairs within radius 5
(`affinitynet.data`); loss bg/4 + fg/4 + neg/2 with batch-wide counts (`affinitynet.losses`). PSA PolyOptimizer;
resumes from --snapshot_dir. Writes <session_name>.npz.
"""
import keras
import tensorflow as tf
from absl import app, flags

from affinitynet import model as model_lib
from affinitynet import runtime
from affinitynet.data import build_aff_dataset
from affinitynet.losses import EPS
from affinitynet.train_common import define_training_flags, initial_weights, make_strategy_first, run_training

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    define_training_flags(flag_values, batch_size=8, max_epoches=8, session_name='vgg_aff')
    runtime.define_model_flags(flag_values, 'network.vgg16_aff')
    flags.DEFINE_string('la_crf_dir', None, 'la CRF dicts of infer_cls --out_la_crf.', flag_values=flag_values)
    flags.DEFINE_string('ha_crf_dir', None, 'ha CRF dicts of infer_cls --out_ha_crf.', flag_values=flag_values)


def affinity_loss_terms(aff, bg, fg, neg):
    """`losses.affinity_loss` as engine terms (numerator, count): counts are summed over every replica's batch,
    so multi-replica training equals the original's batch-wide counts."""
    replicas = tf.distribute.get_replica_context().num_replicas_in_sync
    eps = EPS / replicas
    log_pos = tf.math.log(aff + EPS)
    return {'bg_loss': (tf.reduce_sum(-bg * log_pos) / 4, tf.reduce_sum(bg) + eps),
            'fg_loss': (tf.reduce_sum(-fg * log_pos) / 4, tf.reduce_sum(fg) + eps),
            'neg_loss': (tf.reduce_sum(-neg * tf.math.log(1. + EPS - aff)) / 2, tf.reduce_sum(neg) + eps)}


def train_from_flags(f, hooks=()):
    """Checks the flags, builds AffinityNet under `--strategy` and trains it; returns the engine's metrics.

    Args:
      f: parsed flags of `define_flags`.
      hooks: engine hooks `hook(step, metrics)`.
    """
    for required in ('voc12_root', 'la_crf_dir', 'ha_crf_dir'):
        if not f[required].value:
            raise app.UsageError(f'--{required}: required')
    if f.weights is None:
        raise app.UsageError('--weights: required (ImageNet or classifier weights; "" for from scratch)')
    if f.crop_size % 8:
        raise app.UsageError(f'--crop_size: must be a multiple of 8, got {f.crop_size}')
    arch = model_lib.arch_of(f.network)
    names = runtime.image_ids(f.train_list, '--train_list')
    strategy = make_strategy_first(f)
    keras.utils.set_random_seed(f.seed)
    with strategy.scope():
        net = model_lib.build_affinity_net(arch, f.width_multiplier, from_scratch=not f.weights,
                                           bn_decay=f.bn_decay, dropout=f.dropout)
    initial_weights(net, f.weights)

    def loss_fn(model, batch, training):
        images, bg, fg, neg = batch
        return affinity_loss_terms(model(images, training=training), bg, fg, neg)

    def dataset_fn(input_context):
        return build_aff_dataset(f.train_list, f.voc12_root, f.la_crf_dir, f.ha_crf_dir, f.batch_size,
                                 f.crop_size, arch, net.radius, seed=f.seed, input_context=input_context,
                                 layout_independent=f.layout_independent_data)

    return run_training(net, loss_fn, dataset_fn, f, len(names), model_lib.AFF_SCRATCH, strategy=strategy,
                        hooks=hooks)


def main(argv, flag_values=FLAGS):
    del argv
    train_from_flags(flag_values)


def run():
    from common.cli import run_app
    define_flags()
    run_app(main)


if __name__ == '__main__':
    run()
