"""PSA end to end on a generated synthetic VOC set with a reduced ResNet-38, on CPU in a few minutes.

    python -m affinitynet.quickstart --out runs/psa_quickstart

Steps (each one of the command-line programs, run as a subprocess exactly as a user would): synthetic data ->
train_cls -> infer_cls (CAMs, la/ha CRF labels) -> train_aff -> infer_aff (random walk) -> mIoU of the
CAMs and the random-walk labels on the training images against their ground truth. The CAM figure is the best
of a sweep of the CAMs' background power alpha (background (1 - max CAM)^alpha, as the walk's; the sweep includes
the walk's alpha), so the walk has to beat the CAMs at their best. Writes report.md and report.png (image | CAM |
random walk | ground truth); the last line printed is `quickstart mIoU: cam <x> rw <y>`.
"""
import os
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
# Quick-start settings for tiny images (the programs' defaults stay the original's), found by re-running single
# stages on one trained run (seed 0) and scoring the walk against the CAMs at their best background power:
# - objects of 10 of the 20 classes (--classes) and 240 images, all of whose ~190 train_aug images train the
#   classifier (more images cost no training time; CAMs, CRF labels, AffinityNet and the walk use the first 48):
#   from 48 images of 20 classes (~7 examples a class) the classifier's CAMs stayed diffuse and the CRF labels,
#   hence the affinities, poor; with all 20 classes and 240 images the walk still lost (cam 17.97, rw <= 16.9);
# - la / ha CRF background powers 1 / 8 instead of 4 / 32 (--low_alpha / --high_alpha of infer_cls): these
#   from-scratch CAMs are high over much of the background, so (1 - max)^32 marks almost no pixel as confident
#   background (4% of the pixels; no background pair, bg_loss 0) and 53% of the labelled pixels were wrong;
#   at 1 / 8, 33% confident background, 17% confident foreground, 92% of them right;
# - AffinityNet 300 steps with SGD momentum 0.9 at lr 0.01 (60 steps of the original's momentum-less SGD barely
#   moved it: same-label / different-label affinity AUC 0.71-0.77, walk within +-1 point of the CAMs; 300 steps
#   with momentum: AUC 0.83);
# - the walk at the CAMs' best background power, alpha 1 (CAM sweep alpha 1..32: 30.33 .. 17.34), beta 8 and
#   logt 4 (16 steps instead of 256: on the 14x14 feature grid of a 112-pixel image 256 steps spread the
#   foreground too far). Same run, walk alpha 1: logt 2 31.24, logt 4 32.87, logt 6 32.75, logt 8 31.11;
#   alpha 2 logt 6 32.43; alpha 4 logt 6 29.51 (CAMs at alpha 4: 25.00).
QUICKSTART_CLASSES = '1,2,3,4,5,6,7,8,9,10'
QUICKSTART_RW = {'alpha': 1, 'beta': 8, 'logt': 4}
QUICKSTART_CRF = {'low_alpha': 1, 'high_alpha': 8}
# background powers of the CAM sweep in report.md
CAM_ALPHAS = (1, 2, 4, 8, 16, 32)
flags.DEFINE_string('out', 'runs/psa_quickstart', 'Output folder.')
flags.DEFINE_integer('num_images', 240, 'Synthetic images (about 80% train_aug, all of which train the classifier).')
flags.DEFINE_integer('pseudo_images', 48, 'Pseudo labels (CAMs, affinities, random walk, mIoU) of the first n '
                     'train_aug images (0 = all).')
flags.DEFINE_integer('size', 112, 'Image side.')
flags.DEFINE_float('width_multiplier', 0.125, 'ResNet-38 channel scale.')
flags.DEFINE_integer('cls_steps', 300, 'Classifier steps.')
flags.DEFINE_integer('aff_steps', 300, 'AffinityNet steps.')
flags.DEFINE_integer('batch_size', 8, 'Batch size of both trainings.')
flags.DEFINE_string('classes', QUICKSTART_CLASSES, 'VOC class ids the synthetic objects are drawn from '
                    '(comma-separated; "all" = all 20).')
flags.DEFINE_integer('low_alpha', QUICKSTART_CRF['low_alpha'], 'infer_cls: background power of the la CRF '
                     '(confident foreground).')
flags.DEFINE_integer('high_alpha', QUICKSTART_CRF['high_alpha'], 'infer_cls: background power of the ha CRF '
                     '(confident background).')
flags.DEFINE_integer('alpha', QUICKSTART_RW['alpha'], 'Random walk: background power.')
flags.DEFINE_integer('beta', QUICKSTART_RW['beta'], 'Random walk: affinity power.')
flags.DEFINE_integer('logt', QUICKSTART_RW['logt'], 'Random walk: 2^logt steps.')

# Training from scratch (the originals start from ImageNet weights), so two settings differ from the originals'
# defaults, each through its flag: batch norm trained on batch statistics (--bn_decay; frozen BN keeps mean 0 /
# variance 1 and leaves the deep net unnormalised) and a RandomResizeLong range that fits the small images
# (--resize_long; 256..512 would crop a 112-pixel image to a fraction, whose image-level labels then mostly lie).
# With the original settings the classifier only learned the class priors.
# Three more, found by looking at what the classifier learns (its loss stayed at the class-prior entropy, ~0.44):
# --nodropout (the b6/b7/dropout7 channel dropouts, harmless over 4096 channels, zero whole halves of the 64..512
# channels of the reduced net), hue jitter 0 (--color_jitter: the original's +-36 degree hue shift maps the
# synthetic classes, which differ in hue, onto each other) and SGD momentum 0.9 with lr 0.01 (--intended_momentum:
# the original's momentum is its weight decay, 5e-4, by a positional-argument slip; plain SGD from scratch is slow);
# AffinityNet trains with the same momentum (see above).
SCRATCH_BN_DECAY = 0.9
SCRATCH_CLS_FLAGS = ('--nodropout', '--color_jitter', '0.3,0.3,0.3,0', '--intended_momentum', '--lr', 0.01)
SCRATCH_AFF_FLAGS = ('--intended_momentum', '--lr', 0.01)


def _run(module, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', TF_ENABLE_ONEDNN_OPTS='0')
    command = [sys.executable, '-m', module] + [str(a) for a in args]
    print('$ ' + ' '.join(command), flush=True)
    subprocess.run(command, check=True, env=env)


def pipeline(out, num_images=60, size=112, width_multiplier=0.125, cls_steps=120, aff_steps=60, batch_size=8,
             logt=8, seed=0, classes=None, alpha=16, beta=8, pseudo_images=None, low_alpha=4, high_alpha=32):
    """Runs every stage into `out`; returns {'cam': metric of the CAMs at their best background power
    'cam_alpha', 'cam_sweep': {alpha: metric}, 'rw': metric, 'names': train ids, 'paths': dict, ...}.

    pseudo_images: CAMs, affinities, random walk and evaluation on the first n train_aug images (None = all).
    classes: VOC class ids of the synthetic objects (None = all 20); alpha, beta, logt: of the random walk;
    low_alpha, high_alpha: background powers of the la / ha CRF labels AffinityNet learns from.
    """
    from affinitynet.evaluate import evaluate_pred_dir, sweep_cam_dir
    from common.data.lists import load_img_name_list
    from common.data.synthetic import generate
    from common.io import atomic_write_text

    data = os.path.join(out, 'data')
    root = os.path.join(data, 'VOCdevkit', 'VOC2012')
    lists = os.path.join(data, 'voc12')
    if not os.path.isfile(os.path.join(lists, 'cls_labels.npy')):
        generate('voc', data, num_images=num_images, seed=seed, height=size, width=size, classes=classes)
    train_list = os.path.join(lists, 'train_aug.txt')
    # the classifier trains on every train_aug image (more images cost no training time); the later stages, whose
    # cost grows with the images, run on the first `pseudo_images` of them
    pseudo_list = os.path.join(out, 'pseudo_train.txt')
    with open(train_list) as handle:
        lines = handle.read().splitlines()[:pseudo_images] if pseudo_images else handle.read().splitlines()
    atomic_write_text(pseudo_list, ''.join(line + '\n' for line in lines))
    p = {k: os.path.join(out, k) for k in ('cam', 'crf_la', 'crf_ha', 'rw')}
    model = ['--network', 'network.resnet38_cls', '--width_multiplier', width_multiplier]
    common = ['--voc12_root', root, '--batch_size', batch_size, '--crop_size', size, '--seed', seed,
              '--bn_decay', SCRATCH_BN_DECAY]
    if not os.path.isfile(os.path.join(out, 'cls.npz')):
        _run('affinitynet.train_cls', *model, '--weights', '', '--train_list', train_list, '--cls_labels',
             os.path.join(lists, 'cls_labels.npy'), '--max_steps', cls_steps,
             '--resize_long', f'{size * 7 // 8},{size * 9 // 8}', '--session_name',
             os.path.join(out, 'cls'), *SCRATCH_CLS_FLAGS, *common)
    _run('affinitynet.infer_cls', *model, '--weights', os.path.join(out, 'cls.npz'), '--infer_list', pseudo_list,
         '--voc12_root', root, '--cls_labels', os.path.join(lists, 'cls_labels.npy'), '--out_cam', p['cam'],
         '--out_la_crf', p['crf_la'], '--out_ha_crf', p['crf_ha'], '--low_alpha', low_alpha, '--high_alpha',
         high_alpha)
    aff_model = ['--network', 'network.resnet38_aff', '--width_multiplier', width_multiplier]
    if not os.path.isfile(os.path.join(out, 'aff.npz')):
        _run('affinitynet.train_aff', *aff_model, '--weights', os.path.join(out, 'cls.npz'), '--train_list',
             pseudo_list, '--la_crf_dir', p['crf_la'], '--ha_crf_dir', p['crf_ha'], '--max_steps', aff_steps,
             '--session_name', os.path.join(out, 'aff'), '--nodropout', *SCRATCH_AFF_FLAGS, *common)
    _run('affinitynet.infer_aff', *aff_model, '--weights', os.path.join(out, 'aff.npz'), '--infer_list',
         pseudo_list, '--cam_dir', p['cam'], '--voc12_root', root, '--out_rw', p['rw'], '--alpha', alpha,
         '--beta', beta, '--logt', logt)
    names = load_img_name_list(pseudo_list)
    gt_dir = os.path.join(root, 'SegmentationClassAug')
    # the CAMs' figure is their best over a sweep of the background power that includes the walk's alpha (the
    # walk's labels after 0 steps), so the walk must beat the CAMs at their best background, not at its own
    cam_sweep = sweep_cam_dir(names, p['cam'], gt_dir, 'alpha', sorted(set(CAM_ALPHAS) | {alpha}))
    cam_alpha = max(cam_sweep, key=lambda a: miou(cam_sweep[a]))
    rw = evaluate_pred_dir(names, p['rw'], gt_dir)
    return {'cam': cam_sweep[cam_alpha], 'cam_alpha': cam_alpha, 'cam_sweep': cam_sweep, 'alpha': alpha, 'rw': rw,
            'names': names, 'paths': p, 'root': root, 'gt_dir': gt_dir}


def miou(metric):
    """mIoU (percent) over the classes present in the ground truth or the prediction (the quick start draws its
    objects from a few classes; the others would count 0 in the original's mean over all 21)."""
    return metric.mean_iou(skip_absent=True)


def _present(metric):
    tp_fn, tp_fp, _ = metric.stats()
    return set(np.flatnonzero((np.asarray(tp_fn) + np.asarray(tp_fp)) > 0).tolist())


def write_report(out, result, seconds, num_rows=4):
    """report.md (per-class IoU, CAM vs random walk, the CAMs' background sweep) and report.png
    (image | CAM at its best background power | random walk | ground truth)."""
    from PIL import Image
    from affinitynet import cam as cam_lib
    from affinitynet.evaluate import cam_labels, read_label
    from common.colormap import VOC_CLASS_NAMES, colorize
    from common.io import atomic_write_text, save_png
    alpha, cam_alpha, sweep = result['alpha'], result['cam_alpha'], result['cam_sweep']
    cam_iou, rw_iou = result['cam'].iou(), result['rw'].iou()
    lines = ['# PSA quick start', '', f'{len(result["names"])} synthetic training images, reduced ResNet-38, '
             f'{seconds / 60:.1f} min.', '', f'| class | CAM (background (1 - max)^{cam_alpha}) | '
             f'random walk (alpha {alpha}) |', '|---|---|---|']
    present = [c for c in range(len(cam_iou)) if c in _present(result['cam']) | _present(result['rw'])]
    lines += [f'| {VOC_CLASS_NAMES[c]} | {cam_iou[c]:.2f} | {rw_iou[c]:.2f} |' for c in present]
    lines += [f'| **mIoU** | **{miou(result["cam"]):.2f}** | **{miou(result["rw"]):.2f}** |', '',
              'mIoU over the classes present in the ground truth or the prediction. The CAM figure is the best of '
              'the background sweep below (background score (1 - max CAM)^alpha, as the walk\'s; at the walk\'s '
              'alpha it is the walk with no step).', '',
              '| CAM background power alpha | mIoU |', '|---|---|']
    lines += [f'| {a}{" (walk)" if a == alpha else ""}{" (best)" if a == cam_alpha else ""} | {miou(m):.2f} |'
              for a, m in sweep.items()]
    atomic_write_text(os.path.join(out, 'report.md'), '\n'.join(lines) + '\n')
    rows = []
    for name in result['names'][:num_rows]:
        with Image.open(os.path.join(result['root'], 'JPEGImages', name + '.jpg')) as handle:
            image = np.array(handle.convert('RGB'))
        gt = read_label(os.path.join(result['gt_dir'], name + '.png'))
        cam = cam_labels(cam_lib.load_dict(os.path.join(result['paths']['cam'], name + '.npy')), 'alpha',
                         cam_alpha, gt.shape)
        tiles = [image] + [colorize(x) for x in (cam, read_label(os.path.join(result['paths']['rw'], name + '.png')),
                                                  gt)]
        rows.append(np.concatenate(tiles, axis=1))
    save_png(os.path.join(out, 'report.png'), np.concatenate(rows, axis=0), 'RGB')


def parse_classes(text):
    """'1,2,3' -> (1, 2, 3); 'all' or '' -> None (all 20 classes)."""
    if text.strip().lower() in ('', 'all'):
        return None
    return tuple(int(c) for c in text.split(','))


def main(argv):
    del argv
    start = time.time()
    result = pipeline(FLAGS.out, FLAGS.num_images, FLAGS.size, FLAGS.width_multiplier, FLAGS.cls_steps,
                      FLAGS.aff_steps, FLAGS.batch_size, FLAGS.logt, classes=parse_classes(FLAGS.classes),
                      alpha=FLAGS.alpha, beta=FLAGS.beta, pseudo_images=FLAGS.pseudo_images,
                      low_alpha=FLAGS.low_alpha, high_alpha=FLAGS.high_alpha)
    write_report(FLAGS.out, result, time.time() - start)
    print(f'report: {os.path.join(FLAGS.out, "report.md")}, {os.path.join(FLAGS.out, "report.png")}')
    print(f'quickstart mIoU: cam {miou(result["cam"]):.2f} rw {miou(result["rw"]):.2f}')


if __name__ == '__main__':
    app.run(main)
