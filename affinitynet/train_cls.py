"""Train the classification network whose CAMs seed AffinityNet (PSA `train_cls.py`).

    python -m affinitynet.train_cls --network network.resnet38_cls \\
        --weights ilsvrc-cls_rna-a1_cls1000_ep-0001.params --voc12_root VOC2012 --session_name res38_cls

Multilabel soft-margin loss on global-average-pooled class scores; RandomResizeLong(256, 512), flip, colour
jitter, crop 448; PSA PolyOptimizer. Resumes from the checkpoints in --snapshot_dir. Writes <session_name>.npz.
"""
import keras
from absl import app, flags

from affinitynet import model as model_lib
from affinitynet import runtime
from affinitynet.losses import multilabel_soft_margin_loss
from affinitynet.train_common import define_training_flags, initial_weights, make_strategy_first, run_training
from common.data.psa_transforms import build_psa_cls_dataset

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    define_training_flags(flag_values, batch_size=16, max_epoches=15, session_name='vgg_cls')
    runtime.define_model_flags(flag_values, 'network.vgg16_cls')
    flags.DEFINE_string('cls_labels', 'voc12/cls_labels.npy', 'Image-level labels.', flag_values=flag_values)
    flags.DEFINE_string('resize_long', '256,512', 'RandomResizeLong range "min,max" of the long image side before '
                        'the crop (the original\'s 256,512 suits VOC images and 448 crops; ours, for smaller '
                        'images).', flag_values=flag_values)
    flags.DEFINE_string('color_jitter', '0.3,0.3,0.3,0.1', 'ColorJitter "brightness,contrast,saturation,hue" '
                        '(the original\'s 0.3,0.3,0.3,0.1; a hue shift of up to 36 degrees makes the synthetic '
                        'classes, told apart by hue, look alike: the quick start uses hue 0).',
                        flag_values=flag_values)


def parse_resize_long(value):
    """'min,max' -> (min, max) ints with 0 < min <= max; errors name --resize_long."""
    try:
        low, high = (int(v) for v in value.split(','))
    except ValueError:
        raise ValueError(f'--resize_long: expected "min,max" (two integers), got {value!r}') from None
    if not 0 < low <= high:
        raise ValueError(f'--resize_long: need 0 < min <= max, got {value!r}')
    return low, high


def parse_color_jitter(value):
    """'b,c,s,h' -> 4 floats (b, c, s >= 0, 0 <= h <= 0.5); errors name --color_jitter."""
    try:
        jitter = tuple(float(v) for v in value.split(','))
    except ValueError:
        jitter = ()
    if len(jitter) != 4 or min(jitter) < 0 or jitter[3] > 0.5:
        raise ValueError(f'--color_jitter: expected "brightness,contrast,saturation,hue" (>= 0, hue <= 0.5), '
                         f'got {value!r}')
    return jitter


def train_from_flags(f, hooks=()):
    """Checks the flags, builds the classifier under `--strategy` and trains it; returns the engine's metrics.

    Args:
      f: parsed flags of `define_flags`.
      hooks: engine hooks `hook(step, metrics)`.
    """
    if not f.voc12_root:
        raise app.UsageError('--voc12_root: required')
    if f.weights is None:
        raise app.UsageError('--weights: required (ImageNet .params / .caffemodel; "" for from scratch)')
    arch = model_lib.arch_of(f.network)
    min_long, max_long = parse_resize_long(f.resize_long)
    jitter = parse_color_jitter(f.color_jitter)
    names = runtime.image_ids(f.train_list, '--train_list')
    strategy = make_strategy_first(f)
    keras.utils.set_random_seed(f.seed)
    with strategy.scope():
        net = model_lib.build_classifier(arch, f.width_multiplier, from_scratch=not f.weights,
                                         bn_decay=f.bn_decay, dropout=f.dropout)
    initial_weights(net, f.weights)

    def loss_fn(model, batch, training):
        images, labels = batch
        return {'loss': multilabel_soft_margin_loss(model(images, training=training), labels)}

    def dataset_fn(input_context):
        return build_psa_cls_dataset(f.train_list, f.voc12_root, f.cls_labels, f.batch_size, f.crop_size, arch,
                                     seed=f.seed, input_context=input_context, repeat=True,
                                     min_long=min_long, max_long=max_long, jitter=jitter,
                                     layout_independent=f.layout_independent_data)

    return run_training(net, loss_fn, dataset_fn, f, len(names), model_lib.CLS_SCRATCH, strategy=strategy,
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
