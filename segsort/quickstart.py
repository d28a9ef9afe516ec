"""The SegSort quick start: supervised SegSort end to end on a generated VOC-layout data set, on CPU, in minutes.

    python -m segsort.quickstart --out runs/segsort_quickstart

Steps (each one the project's command-line program, as the bash pipelines run them):
  1. generate the synthetic VOC set under <out>/data (kept if it already exists; the same set as aaf.quickstart);
  2. train supervised SegSort (reduced-width ResNet-v1 PSPNet with a 32-d embedding, from scratch) on train+;
  3. extract the training prototypes from train;
  4. single-scale kNN inference on val;
  5. benchmark (per-class IoU, mIoU);
  6. write <out>/report.md and <out>/report.png (image | ground truth | prediction | embedding PCA as RGB).
The last line printed is `quickstart mIoU: segsort <x>` (percent).
"""
import os
import time

import numpy as np
from absl import flags
from PIL import Image

from aaf.quickstart import _run, generate_data
from common.cli import run_app
from common.colormap import VOC_CLASS_NAMES, colorize
from common.io import atomic_write_text, save_png

FLAGS = flags.FLAGS

QUICKSTART_MODEL = {
    'backbone_filters': '8,16,32,64',
    'backbone_blocks': '1,1,1,1',
    'psp_channels': '32',
    'bn_decay': '0.99',  # trained from scratch (the original's 0.9997 assumes ImageNet statistics)
}


def define_flags(flag_values=FLAGS):
    fv = dict(flag_values=flag_values)
    flags.DEFINE_string('out', 'runs/segsort_quickstart', 'Output directory (data, snapshots, results, report).',
                        **fv)
    flags.DEFINE_integer('num_images', 250, 'Images of the synthetic VOC set (20% val, the rest train+).', **fv)
    flags.DEFINE_integer('seed', 0, 'Seed of the data set and of training.', **fv)
    flags.DEFINE_integer('num_steps', 300, 'Training steps.', **fv)
    flags.DEFINE_integer('batch_size', 8, 'Training batch size.', **fv)
    flags.DEFINE_integer('crop_size', 96, 'Training crop (square, multiple of 48 for PSPNet).', **fv)
    flags.DEFINE_integer('canvas_size', 192, 'Single-scale inference canvas (>= every val image, multiple of 48).',
                         **fv)
    flags.DEFINE_float('learning_rate', 1e-2, 'Base learning rate (no ImageNet initialisation here).', **fv)
    flags.DEFINE_integer('num_report_images', 4, 'Validation images shown in report.png.', **fv)


def _model_flags():
    return [f'--{k}={v}' for k, v in QUICKSTART_MODEL.items()]


def embedding_pca_rgb(embedding):
    """First three principal components of a [H, W, D] embedding, min-max scaled to uint8 RGB."""
    from segsort.vis_utils import pca
    components = pca(embedding.reshape(-1, embedding.shape[-1]), 3)
    low, high = components.min(0), components.max(0)
    scaled = (components - low) / np.maximum(high - low, 1e-12)
    return (255 * scaled).reshape(embedding.shape[:2] + (3,)).astype(np.uint8)


def _embeddings(checkpoint, image_paths):
    """Normalised embeddings of images with the trained network (in-process, for the PCA column)."""
    from types import SimpleNamespace

    from common.data.aaf_reader import IMG_MEAN
    from common.infer.outputs import load_image
    from common.infer.sliding_window import pad_to_window
    from common.ops.resize import resize_bilinear_legacy
    from segsort.clustering import normalize_embedding
    from segsort.model import load_embedding_model
    size = [FLAGS.canvas_size] * 2
    cfg = SimpleNamespace(model='pspnet', embedding_dim=32, restore_from=checkpoint,
                          backbone_blocks=QUICKSTART_MODEL['backbone_blocks'],
                          backbone_filters=QUICKSTART_MODEL['backbone_filters'],
                          psp_channels=int(QUICKSTART_MODEL['psp_channels']),
                          bn_decay=float(QUICKSTART_MODEL['bn_decay']))
    model = load_embedding_model(cfg, size)
    out = []
    for path in image_paths:
        image = load_image(path, IMG_MEAN)
        raw = model(pad_to_window(image, size)[np.newaxis], training=False)
        emb = normalize_embedding(resize_bilinear_legacy(raw, size))[0].numpy()
        out.append(emb[:image.shape[0], :image.shape[1]])
    return out


def write_report(out, data_dir, result, result_dir, checkpoint):
    lines = ['# SegSort quick start', '',
             f'Synthetic VOC ({FLAGS.num_images} images, seed {FLAGS.seed}); reduced PSPNet '
             f'(filters {QUICKSTART_MODEL["backbone_filters"]}, blocks {QUICKSTART_MODEL["backbone_blocks"]}, '
             f'PSP width {QUICKSTART_MODEL["psp_channels"]}) with a 32-d embedding trained from scratch with the '
             f'supervised SegSort loss for {FLAGS.num_steps} steps, batch {FLAGS.batch_size}, crop '
             f'{FLAGS.crop_size}; prototypes from train; single-scale kNN inference (k=15) on val.', '',
             '| class | IoU |', '|---|---:|']
    for c, name in enumerate(VOC_CLASS_NAMES):
        lines.append(f'| {name} | {result["iou"][c]:.2f} |')
    lines.append(f'| **mIoU** | **{result["mean_iou"]:.2f}** |')
    lines.append(f'| pixel accuracy | {100 * result["pixel_acc"]:.2f} |')
    lines += ['', '![image | ground truth | prediction | embedding PCA](report.png)', '']
    atomic_write_text(os.path.join(out, 'report.md'), '\n'.join(lines) + '\n')

    from common.data.lists import read_labeled_image_list
    images, labels = read_labeled_image_list(f'{data_dir}/VOCdevkit/', f'{data_dir}/dataset/voc12/val.txt')
    pairs = list(zip(images, labels))[:FLAGS.num_report_images]
    embeddings = _embeddings(checkpoint, [p for p, _ in pairs])
    rows, size = [], 128
    for (image_path, label_path), embedding in zip(pairs, embeddings):
        name = os.path.basename(image_path).replace('.jpg', '.png')
        tiles = [np.asarray(Image.open(image_path).convert('RGB')), colorize(np.asarray(Image.open(label_path))),
                 colorize(np.asarray(Image.open(os.path.join(result_dir, 'gray', name)))),
                 embedding_pca_rgb(embedding)]
        rows.append(np.concatenate([np.asarray(Image.fromarray(t).resize((size, size), Image.NEAREST))
                                    for t in tiles], axis=1))
    save_png(os.path.join(out, 'report.png'), np.concatenate(rows, axis=0), 'RGB')


def pipeline_commands(data_dir, snapshot):
    """The three program runs of the quick start: [(['module', flags...], log file name)] for training,
    prototype extraction and inference, in order."""
    voc, lists = f'{data_dir}/VOCdevkit/', f'{data_dir}/dataset/voc12'
    crop, canvas = FLAGS.crop_size, FLAGS.canvas_size
    checkpoint = os.path.join(snapshot, f'model.ckpt-{FLAGS.num_steps}')
    prototypes = os.path.join(snapshot, 'results', 'train')
    embedding = ['--embedding_dim=32', '--num_clusters=5', '--kmeans_iterations=10']
    train = ['segsort.train', f'--snapshot_dir={snapshot}', f'--data_dir={voc}', f'--data_list={lists}/train+.txt',
             f'--batch_size={FLAGS.batch_size}', f'--input_size={crop},{crop}',
             f'--learning_rate={FLAGS.learning_rate}', f'--num_steps={FLAGS.num_steps + 1}',
             f'--save_pred_every={FLAGS.num_steps}', '--update_tb_every=50', '--iter_size=1', '--weight_decay=5e-4',
             '--concentration=10', '--num_banks=2', f'--random_seed={FLAGS.seed}', '--random_mirror',
             '--random_scale', '--random_crop', '--is_training', '--noprogress', '--deterministic']
    extract = ['segsort.extract_prototypes', f'--data_dir={voc}', f'--data_list={lists}/train.txt',
               f'--input_size={crop},{crop}', f'--strides={crop * 2 // 3},{crop * 2 // 3}',
               f'--restore_from={checkpoint}', f'--save_dir={prototypes}', '--noprogress']
    infer = ['segsort.inference', f'--data_dir={voc}', f'--data_list={lists}/val.txt',
             f'--input_size={canvas},{canvas}', f'--restore_from={checkpoint}',
             f'--prototype_dir={prototypes}/prototypes', '--k_in_nearest_neighbors=15',
             f'--save_dir={os.path.join(snapshot, "results", "val")}', '--colormap=voc', '--noprogress']
    return [(train + embedding + _model_flags(), 'train.log'),
            (extract + embedding + _model_flags(), 'extract_prototypes.log'),
            (infer + embedding + _model_flags(), 'inference.log')]


def main(argv):
    del argv
    from common.eval.benchmark import evaluate_dirs
    start = time.time()
    out = os.path.abspath(FLAGS.out)
    logs = os.path.join(out, 'logs')
    os.makedirs(logs, exist_ok=True)
    print(f'[1/5] synthetic VOC data in {out}/data', flush=True)
    data_dir = generate_data(out)
    snapshot = os.path.join(out, 'snapshots', 'segsort')
    steps = pipeline_commands(data_dir, snapshot)
    titles = ('[2/5] training supervised SegSort', '[3/5] training prototypes', '[4/5] single-scale kNN inference')
    for title, (args, log_name) in zip(titles, steps):
        print(title, flush=True)
        _run(args, os.path.join(logs, log_name))
    checkpoint = os.path.join(snapshot, f'model.ckpt-{FLAGS.num_steps}')
    result_dir = os.path.join(snapshot, 'results', 'val')
    print('[5/5] benchmark and report', flush=True)
    result = evaluate_dirs(os.path.join(result_dir, 'gray'), f'{data_dir}/VOCdevkit/VOC2012/segcls', num_classes=21)
    write_report(out, data_dir, result, result_dir, checkpoint)
    print(f'report: {out}/report.md, {out}/report.png; total {time.time() - start:.0f} s')
    print(f'quickstart mIoU: segsort {result["mean_iou"]:.2f}')


def run():
    """Console script `segsort-quickstart`."""
    define_flags()
    run_app(main)


if __name__ == '__main__':
    run()
