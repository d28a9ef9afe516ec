"""`python -m a2gnn.quickstart --out DIR`: A2GNN's box and image-level pipelines on a synthetic VOC set with a
reduced ResNet-38 trunk on CPU.

1. synthetic VOC (common.data.synthetic) with its A2GNN seed folders (SEAM_Box, SEAM_Image, ...);
2. per supervision: train the gated affinity net from scratch on the seeds (train_gated_aff; radius 4 for box,
   3 for image-level), then the per-image A2GNN (train_infer_box / train_infer_others, --rw False: the
   synthetic set has no SEAM CAMs);
3. score seeds and pseudo labels of the image-level run's train images against the ground truth (all labelled
   ground-truth pixels, unlabelled seed pixels counted as background; mIoU over the classes present in the
   ground truth or the prediction), write report.md and report.png (image | seeds | A2GNN | ground truth).
The last line reads `quickstart mIoU: seeds <x> a2gnn <y>`.
"""
import os
import time

os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')  # see a2gnn.train_gated_aff

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

FLAGS = flags.FLAGS
PIPELINES = {'box': ('SEAM_Box', 4), 'image': ('SEAM_Image', 3)}


def _define_flags():
    flags.DEFINE_string('out', None, 'Output directory.')
    flags.DEFINE_integer('num_images', 12, 'Synthetic images (seeds for all but val; the train split is scored).')
    flags.DEFINE_integer('size', 128, 'Image height and width (16 x 16 nodes).')
    flags.DEFINE_integer('seed', 0, 'Data and GNN seed.')
    flags.DEFINE_float('width_multiplier', 0.0625, 'ResNet-38 width scale.')
    flags.DEFINE_integer('aff_epochs', 10, 'Gated affinity training epochs.')
    flags.DEFINE_integer('box_epochs', 50, 'GNN steps per phase for box (the original: 150).')
    flags.DEFINE_integer('image_epochs', 50, 'GNN steps per phase for image-level (the original: 50).')


def _score(names, voc, seed_dir, pred_dir):
    from PIL import Image
    from common.eval.metrics import SegmentationMetric
    seeds, a2gnn = SegmentationMetric(21), SegmentationMetric(21)
    for name in names:
        gt = np.array(Image.open(os.path.join(voc, 'SegmentationClassAug', name + '.png')))
        seed = np.array(Image.open(os.path.join(seed_dir, name + '.png')))
        seeds.update(np.where(seed == 255, 0, seed), gt)
        a2gnn.update(np.array(Image.open(os.path.join(pred_dir, name + '.png'))), gt)
    return seeds.mean_iou(skip_absent=True), a2gnn.mean_iou(skip_absent=True)


def _report(out, names, voc, seed_dir, pred_dir, scores, timings):
    from PIL import Image
    from common.colormap import colorize
    from common.io import atomic_write_text, save_png
    rows = []
    for name in names[:4]:
        img = np.array(Image.open(os.path.join(voc, 'JPEGImages', name + '.jpg')).convert('RGB'))
        tiles = [img] + [colorize(np.array(Image.open(os.path.join(d, name + '.png'))))
                         for d in (seed_dir, pred_dir, os.path.join(voc, 'SegmentationClassAug'))]
        rows.append(np.concatenate(tiles, axis=1))
    save_png(os.path.join(out, 'report.png'), np.concatenate(rows, axis=0), 'RGB')
    lines = ['# A2GNN quick start', '',
             f'Synthetic VOC, {FLAGS.num_images} images of {FLAGS.size}x{FLAGS.size} (seed {FLAGS.seed}); '
             f'ResNet-38 at width x{FLAGS.width_multiplier}, gated affinity net trained from scratch on the seeds '
             f'for {FLAGS.aff_epochs} epochs; A2GNN {FLAGS.box_epochs} (box) / {FLAGS.image_epochs} (image) steps '
             'per phase; no random walk (no SEAM CAMs in the synthetic set).', '',
             '| pipeline | seeds mIoU | A2GNN mIoU | time (s) |', '|---|---:|---:|---:|']
    for mode, (seed_score, a2gnn_score) in scores.items():
        lines.append(f'| {mode} | {seed_score:.2f} | {a2gnn_score:.2f} | {timings[mode]:.0f} |')
    lines += ['', 'Scored on every labelled ground-truth pixel of the train images, unlabelled seed pixels as '
              'background.', '', '![image | seeds | A2GNN | ground truth](report.png)', '']
    atomic_write_text(os.path.join(out, 'report.md'), '\n'.join(lines))


def main(argv):
    del argv
    from a2gnn import cli
    from a2gnn.train_gated_aff import train_gated_affinity
    from affinitynet.model import save_weights
    from common.data.lists import load_img_name_list
    from common.data.synthetic import generate
    if not FLAGS.out:
        raise flags.ValidationError('--out is required')
    import keras
    keras.utils.set_random_seed(FLAGS.seed)  # the from-scratch trunk's initialisation
    import tensorflow as tf
    tf.config.experimental.enable_op_determinism()  # same figures on a rerun (threaded reductions, tf.data)
    start = time.time()
    out = os.path.abspath(FLAGS.out)
    data = os.path.join(out, 'data')
    if not os.path.isdir(os.path.join(data, 'voc12')):
        generate('voc', data, num_images=FLAGS.num_images, seed=FLAGS.seed, height=FLAGS.size, width=FLAGS.size)
    voc = os.path.join(data, 'VOCdevkit', 'VOC2012')
    train_list = os.path.join(data, 'voc12', 'train.txt')
    names = load_img_name_list(train_list)
    scores, timings = {}, {}
    for mode, (seed_folder, radius) in PIPELINES.items():
        t0 = time.time()
        seed_dir = os.path.join(data, 'data', 'Init_Label', seed_folder)
        weights = os.path.join(out, f'aff_{mode}.npz')
        if not os.path.exists(weights):
            net = cli.build_net('', FLAGS.width_multiplier, FLAGS.seed)
            train_gated_affinity(net, load_img_name_list(os.path.join(data, 'voc12', 'train_aug.txt')), voc,
                                 seed_dir, crop_size=FLAGS.size, batch_size=2, max_epoches=FLAGS.aff_epochs,
                                 radius=radius, seed=FLAGS.seed)
            save_weights(net, weights)
        script = 'box' if mode == 'box' else 'others'
        fv = flags.FlagValues()
        cli.define_flags(script, fv)
        pred_dir = os.path.join(out, f'{mode}_pred')
        argv = ['quickstart', f'--weights={weights}', f'--infer_list={train_list}', f'--voc12_root={voc}',
                f'--seed_label_root={seed_dir}', f'--radius={radius}', f'--save_path={pred_dir}',
                f'--width_multiplier={FLAGS.width_multiplier}', f'--gnn_seed={FLAGS.seed}',
                f'--epochs={FLAGS.box_epochs if mode == "box" else FLAGS.image_epochs}']
        argv += [f'--BoxXmlpath={os.path.join(voc, "Annotations")}'] if mode == 'box' else ['--rw=False']
        fv(argv)
        cli.main(script, fv)
        scores[mode] = _score(names, voc, seed_dir, pred_dir)
        timings[mode] = time.time() - t0
        print(f'{mode}: seeds {scores[mode][0]:.2f} a2gnn {scores[mode][1]:.2f} ({timings[mode]:.0f} s)')
    image_dir = os.path.join(data, 'data', 'Init_Label', PIPELINES['image'][0])
    _report(out, names, voc, image_dir, os.path.join(out, 'image_pred'), scores, timings)
    print(f'report: {out}/report.md, {out}/report.png; total {time.time() - start:.0f} s')
    print(f'quickstart mIoU: seeds {scores["image"][0]:.2f} a2gnn {scores["image"][1]:.2f}')


def run():
    """Console-script entry point."""
    from common.cli import run_app
    _define_flags()
    run_app(main)


if __name__ == '__main__':
    run()
