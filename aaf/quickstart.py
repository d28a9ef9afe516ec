"""The AAF quick start: the whole pipeline on a generated VOC-layout data set, on CPU, in minutes.

    python -m aaf.quickstart --out runs/quickstart

Steps (each one a real command-line program of the project, as the bash pipelines run them):
  1. generate the synthetic VOC set under <out>/data (kept if it already exists);
  2. train the softmax baseline and AAF (a reduced-width ResNet-v1 PSPNet, from scratch) on train+;
  3. multi-scale + flip inference of both on val;
  4. benchmark both (per-class IoU, mIoU);
  5. export the AAF model as a SavedModel (uint8 image in, class map out);
  6. write <out>/report.md (per-class IoU table, baseline vs AAF) and <out>/report.png (image | ground truth |
     baseline | AAF for a few validation images).
The last line printed is `quickstart mIoU: baseline <x> aaf <y>` (percent).
"""
import json
import os
import subprocess
import sys
import time

import numpy as np
from absl import flags
from PIL import Image

from common.cli import run_app
from common.colormap import VOC_CLASS_NAMES, colorize
from common.io import atomic_write_text, save_png

FLAGS = flags.FLAGS

# A reduced network of the same builders (full ResNet-101 PSPNet trains at ~1.4 s/image on 2 CPU cores).
QUICKSTART_MODEL = {
    'backbone_filters': '8,16,32,64',
    'backbone_blocks': '1,1,1,1',
    'psp_channels': '32',
    # Trained from scratch: the original decay 0.9997 would leave the moving statistics near their initial values
    # after a few hundred steps (the originals start from ImageNet statistics).
    'bn_decay': '0.99',
}
MODES = ('baseline', 'aaf')


def define_flags(flag_values=FLAGS):
    """The quick start's flags, in `flag_values` (default the global FLAGS; tests pass a fresh one)."""
    fv = dict(flag_values=flag_values)
    flags.DEFINE_string('out', 'runs/quickstart', 'Output directory (data, snapshots, results, report).', **fv)
    flags.DEFINE_integer('num_images', 250, 'Images of the synthetic VOC set (20% val, the rest train+).', **fv)
    flags.DEFINE_integer('seed', 0, 'Seed of the data set and of training.', **fv)
    flags.DEFINE_integer('num_steps', 600, 'Training steps per model.', **fv)
    flags.DEFINE_integer('batch_size', 8, 'Training batch size.', **fv)
    flags.DEFINE_integer('crop_size', 96, 'Training crop (square, multiple of 48 for PSPNet).', **fv)
    flags.DEFINE_float('learning_rate', 1e-2, 'Base learning rate (no ImageNet initialisation here).', **fv)
    flags.DEFINE_integer('num_report_images', 4, 'Validation images shown in report.png.', **fv)


def _run(args, log_path):
    """Runs one project program, streaming its output to a log file; raises with the log's tail on failure."""
    cmd = [sys.executable, '-m'] + [str(a) for a in args]
    start = time.time()
    with open(log_path, 'w') as log:
        log.write(' '.join(cmd) + '\n')
        log.flush()
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode:
        with open(log_path) as log:
            tail = log.read()[-3000:]
        raise RuntimeError(f'{args[0]} failed (exit {proc.returncode}); log {log_path}:\n{tail}')
    print(f'  {args[0]} done in {time.time() - start:.0f} s (log: {log_path})', flush=True)


def _model_flags():
    return [f'--{k}={v}' for k, v in QUICKSTART_MODEL.items()]


def _read_json(path):
    with open(path) as handle:
        return json.load(handle)


def generate_data(out):
    """The synthetic VOC set; returns its summary (paths of the data root and lists)."""
    from common.data.synthetic import format_stats, generate
    data_dir = os.path.join(out, 'data')
    marker = os.path.join(data_dir, 'quickstart_data.json')
    wanted = {'num_images': FLAGS.num_images, 'seed': FLAGS.seed}
    if os.path.isfile(marker) and _read_json(marker) == wanted:
        print(f'  reusing {data_dir}', flush=True)
        return data_dir
    summary = generate('voc', data_dir, FLAGS.num_images, seed=FLAGS.seed, progress=True)
    print(format_stats(summary), flush=True)
    atomic_write_text(marker, json.dumps(wanted))
    return data_dir


def train(mode, data_dir, snapshot_dir, logs):
    crop = FLAGS.crop_size
    args = ['aaf.train', f'--mode={mode}', f'--snapshot-dir={snapshot_dir}',
            f'--data-dir={data_dir}/VOCdevkit/', f'--data-list={data_dir}/dataset/voc12/train+.txt',
            f'--batch-size={FLAGS.batch_size}', f'--input-size={crop},{crop}', f'--learning-rate={FLAGS.learning_rate}',
            f'--num-steps={FLAGS.num_steps + 1}', f'--save-pred-every={FLAGS.num_steps}', '--update-tb-every=50',
            '--iter-size=1', '--weight-decay=5e-4', '--num-classes=21', f'--random-seed={FLAGS.seed}',
            '--random-mirror', '--random-scale', '--random-crop', '--is-training', '--noprogress',
            '--deterministic']  # reproducible numbers for the README
    if mode != 'baseline':
        args += ['--kld-margin=3.0', '--kld-lambda-1=1.0', '--kld-lambda-2=1.0']
    _run(args + _model_flags(), os.path.join(logs, f'train_{mode}.log'))
    return os.path.join(snapshot_dir, f'model.ckpt-{FLAGS.num_steps}')


def infer(checkpoint, data_dir, save_dir, logs, name):
    crop = FLAGS.crop_size
    args = ['aaf.inference_msc', '--flip-aug', '--scale-aug', f'--data-dir={data_dir}/VOCdevkit/',
            f'--data-list={data_dir}/dataset/voc12/val.txt', f'--input-size={crop},{crop}',
            f'--strides={crop * 2 // 3},{crop * 2 // 3}', f'--restore-from={checkpoint}', '--colormap=voc',
            '--num-classes=21', f'--save-dir={save_dir}', '--noprogress']
    _run(args + _model_flags(), os.path.join(logs, f'inference_{name}.log'))


def export(checkpoint, out_dir, logs):
    crop = FLAGS.crop_size
    args = ['common.infer.export', '--model=pspnet', f'--checkpoint={checkpoint}', f'--out={out_dir}',
            '--num-classes=21', f'--input-size={crop},{crop}', f'--strides={crop * 2 // 3},{crop * 2 // 3}']
    _run(args + _model_flags(), os.path.join(logs, 'export.log'))


def write_report(out, data_dir, results, result_dirs):
    """report.md (per-class IoU, baseline vs AAF) and report.png (image | GT | baseline | AAF)."""
    lines = ['# AAF quick start', '',
             f'Synthetic VOC ({FLAGS.num_images} images, seed {FLAGS.seed}); reduced PSPNet '
             f'(filters {QUICKSTART_MODEL["backbone_filters"]}, blocks {QUICKSTART_MODEL["backbone_blocks"]}, '
             f'PSP width {QUICKSTART_MODEL["psp_channels"]}) trained from scratch for {FLAGS.num_steps} steps, '
             f'batch {FLAGS.batch_size}, crop {FLAGS.crop_size}; multi-scale + flip inference on val.', '',
             '| class | baseline IoU | AAF IoU |', '|---|---:|---:|']
    for c, name in enumerate(VOC_CLASS_NAMES):
        lines.append(f'| {name} | {results["baseline"]["iou"][c]:.2f} | {results["aaf"]["iou"][c]:.2f} |')
    lines.append(f'| **mIoU** | **{results["baseline"]["mean_iou"]:.2f}** | **{results["aaf"]["mean_iou"]:.2f}** |')
    lines.append(f'| pixel accuracy | {100 * results["baseline"]["pixel_acc"]:.2f} | '
                 f'{100 * results["aaf"]["pixel_acc"]:.2f} |')
    lines += ['', '![image | ground truth | baseline | AAF](report.png)', '']
    atomic_write_text(os.path.join(out, 'report.md'), '\n'.join(lines) + '\n')

    from common.data.lists import read_labeled_image_list
    images, labels = read_labeled_image_list(f'{data_dir}/VOCdevkit/', f'{data_dir}/dataset/voc12/val.txt')
    rows, size = [], 128
    for image_path, label_path in list(zip(images, labels))[:FLAGS.num_report_images]:
        name = os.path.basename(image_path).replace('.jpg', '.png')
        tiles = [np.asarray(Image.open(image_path).convert('RGB')), colorize(np.asarray(Image.open(label_path)))]
        tiles += [colorize(np.asarray(Image.open(os.path.join(result_dirs[m], 'gray', name)))) for m in MODES]
        rows.append(np.concatenate([np.asarray(Image.fromarray(t).resize((size, size), Image.NEAREST))
                                    for t in tiles], axis=1))
    grid = np.concatenate(rows, axis=0)
    save_png(os.path.join(out, 'report.png'), grid, 'RGB')


def main(argv):
    del argv
    from common.eval.benchmark import evaluate_dirs
    start = time.time()
    out = os.path.abspath(FLAGS.out)
    logs = os.path.join(out, 'logs')
    os.makedirs(logs, exist_ok=True)
    print(f'[1/5] synthetic VOC data in {out}/data', flush=True)
    data_dir = generate_data(out)
    results, result_dirs, checkpoints = {}, {}, {}
    for mode in MODES:
        print(f'[2/5] training {mode}', flush=True)
        checkpoints[mode] = train(mode, data_dir, os.path.join(out, 'snapshots', mode), logs)
    for mode in MODES:
        print(f'[3/5] multi-scale + flip inference, {mode}', flush=True)
        result_dirs[mode] = os.path.join(out, 'results', mode)
        infer(checkpoints[mode], data_dir, result_dirs[mode], logs, mode)
        print(f'[4/5] benchmark, {mode}', flush=True)
        results[mode] = evaluate_dirs(os.path.join(result_dirs[mode], 'gray'),
                                      f'{data_dir}/VOCdevkit/VOC2012/segcls', num_classes=21)
    print('[5/5] SavedModel export and report', flush=True)
    export(checkpoints['aaf'], os.path.join(out, 'saved_model'), logs)
    write_report(out, data_dir, results, result_dirs)
    print(f'report: {out}/report.md, {out}/report.png; total {time.time() - start:.0f} s')
    print(f'quickstart mIoU: baseline {results["baseline"]["mean_iou"]:.2f} aaf {results["aaf"]["mean_iou"]:.2f}')


def run():
    """Console script `aaf-quickstart`."""
    define_flags()
    run_app(main)


if __name__ == '__main__':
    run()
