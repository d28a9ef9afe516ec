"""`python -m a2gnn.train_gated_aff` (A2GNN `train_gated_aff.py`): trains the gated affinity network on seed
labels with bg/4 + fg/4 + neg/2 + 3 x gated CRF regulariser, PSA's PolyOptimizer (SGD momentum = wt_dec, poly
power 0.9, lr x1 / x2 / x10 / x20 groups) and the VOC12AffGtDataset_NoExtract augmentation."""
import os
import random

# oneDNN's conv2d_backprop_filter crashes (segfault / heap corruption) on some reduced-width ResNet-38 layers in
# TF 2.21 CPU; the plain Eigen kernels are used unless the caller chose otherwise before TensorFlow was imported.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

HEAD = ('f8_3', 'f8_4', 'f8_5', 'f9')


def define_flags(flag_values=None):
    fv = flags.FLAGS if flag_values is None else flag_values
    if 'label_dir' in fv:
        return
    flags.DEFINE_integer('batch_size', 4, 'Batch size.', flag_values=fv)
    flags.DEFINE_integer('max_epoches', 12, 'Epochs.', flag_values=fv)
    flags.DEFINE_string('network', 'network.resnet38_aff_gated', 'Only the gated ResNet-38 exists.', flag_values=fv)
    flags.DEFINE_float('lr', 0.01, 'Base learning rate.', flag_values=fv)
    flags.DEFINE_integer('radius', 4, 'Window radius (4 box/scribble, 3 image/point).', flag_values=fv)
    flags.DEFINE_integer('num_workers', 8, 'Unused (kept for the original command lines).', flag_values=fv)
    flags.DEFINE_float('wt_dec', 5e-4, 'Weight decay (and, as the original, SGD momentum).', flag_values=fv)
    flags.DEFINE_string('train_list', 'voc12/train_aug.txt', 'Image list.', flag_values=fv)
    flags.DEFINE_string('session_name', 'res_aff_box', 'Output weights <session_name>.npz.', flag_values=fv)
    flags.DEFINE_integer('crop_size', 448, 'Crop size (multiple of 8).', flag_values=fv)
    flags.DEFINE_string('weights', './netWeights/resnet38_aff_SEAM.pth', 'Initial weights ("" = random).',
                        flag_values=fv)
    flags.DEFINE_string('voc12_root', '/data/zbf_data/dataset/VOCdevkit/VOC2012', 'VOC2012 directory.',
                        flag_values=fv)
    flags.DEFINE_string('label_dir', './data/Init_Label/SEAM_Box', 'Seed PNG folder.', flag_values=fv)
    flags.DEFINE_float('width_multiplier', 1.0, 'ResNet-38 width scale (reduced trunks for CPU).', flag_values=fv)
    flags.DEFINE_integer('seed', 0, 'Seed of the data order, the augmentation and a from-scratch initialisation.', flag_values=fv)


def make_train_step(net, optimizer, radius, details=False):
    """One training step of the gated affinity net as a tf.function(images [N, S, S, 3], labels [N, S/8, S/8],
    croppings [N, S/8, S/8], learning_rate) -> dict loss; with details also aff, aff_crf (the head's outputs),
    grad_aff, grad_aff_crf (d loss / d aff, d aff_crf, the latter including the path through aff) and grads (of
    net.trainable_variables), all of this step. The optimizer (built on net.trainable_variables) applies the
    gradients."""
    from a2gnn.losses import gated_affinity_loss
    variables = net.trainable_variables

    @tf.function(autograph=False)
    def step(images, labels, croppings, learning_rate):
        with tf.GradientTape() as tape:
            _, aff, aff_crf = net(images, radius=radius, training=True)
            loss = gated_affinity_loss(aff, aff_crf, labels, croppings, images, radius)['loss']
        grads = tape.gradient(loss, variables + [aff, aff_crf])
        optimizer.apply_gradients(zip(grads[:len(variables)], variables), learning_rate)
        if not details:
            return {'loss': loss}
        return {'loss': loss, 'aff': aff, 'aff_crf': aff_crf, 'grad_aff': grads[-2], 'grad_aff_crf': grads[-1],
                'grads': grads[:len(variables)]}

    return step


def train_gated_affinity(net, names, voc12_root, label_dir, crop_size=448, batch_size=4, max_epoches=12,
                         lr=0.01, wt_dec=5e-4, radius=4, seed=0, progress=True):
    """Trains `net` (GatedAffinityNet) in place; returns the list of per-step losses."""
    from tqdm import tqdm
    from a2gnn.cli import read_image
    from a2gnn.seeds import read_seed
    from common.data.psa_transforms import a2gnn_aff_train_transform
    from common.train.optimizers import poly_optimizer
    from common.train.schedules import poly_lr
    if crop_size % 8:
        raise ValueError(f'--crop_size must be a multiple of 8, got {crop_size}')
    if len(names) < batch_size:
        raise ValueError(f'--train_list has {len(names)} images, fewer than --batch_size {batch_size}')
    rng = random.Random(seed)
    data = [(read_image(voc12_root, n), read_seed(os.path.join(label_dir, n + '.png'))) for n in names]
    steps_per_epoch = len(names) // batch_size  # drop_last, as the original
    max_step = steps_per_epoch * max_epoches
    variables = net.trainable_variables
    optimizer = poly_optimizer(wt_dec, HEAD)
    optimizer.build(variables)

    step = make_train_step(net, optimizer, radius)

    losses = []
    with tqdm(total=max_step, desc='gated affinity', disable=not progress) as bar:
        for _ in range(max_epoches):
            order = list(range(len(data)))
            rng.shuffle(order)
            for b in range(steps_per_epoch):
                batch = [a2gnn_aff_train_transform(*data[i], crop_size=crop_size, rng=rng)
                         for i in order[b * batch_size:(b + 1) * batch_size]]
                images, labels, croppings = (np.stack(x) for x in zip(*batch))
                learning_rate = poly_lr(lr, len(losses), max_step, power=0.9, freeze_after_end=True)
                loss = float(step(images, labels, croppings, tf.constant(learning_rate, tf.float32))['loss'])
                if not np.isfinite(loss):
                    raise FloatingPointError(f'gated affinity loss is {loss} at step {len(losses)}: training stopped')
                losses.append(loss)
                bar.update(1)
                bar.set_postfix(loss=f'{loss:.4f}')
    return losses


def main(argv, flag_values=None):
    del argv
    from a2gnn.cli import build_net
    from affinitynet.model import save_weights
    from common.data.lists import load_img_name_list
    fv = flags.FLAGS if flag_values is None else flag_values
    if not os.path.isdir(fv.label_dir):
        raise app.UsageError(f'--label_dir: no such directory: {fv.label_dir}')
    net = build_net(fv.weights, fv.width_multiplier, fv.seed)
    losses = train_gated_affinity(net, load_img_name_list(fv.train_list), fv.voc12_root, fv.label_dir,
                                  fv.crop_size, fv.batch_size, fv.max_epoches, fv.lr, fv.wt_dec, fv.radius, fv.seed)
    path = save_weights(net, fv.session_name + '.npz')
    print(f'{len(losses)} steps, loss {np.mean(losses[:2]):.4f} (first 2) -> {np.mean(losses[-2:]):.4f} (last 2); '
          f'weights written to {path}')


def run():
    from common.cli import run_app
    define_flags()
    run_app(main)


if __name__ == '__main__':
    run()
