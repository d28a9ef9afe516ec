"""Training prototypes for SegSort's kNN inference (`extract_prototypes.py`, aaf_segsort.md 7.5).

    python -m segsort.extract_prototypes --data_dir VOCdevkit/ --data_list dataset/voc12/train+.txt \
        --input_size 480,480 --strides 320,320 --restore_from snapshots/segsort/stage1/model.ckpt-30000 \
        --embedding_dim 32 --num_clusters 5 --kmeans_iterations 10 --save_dir snapshots/segsort/stage1/results/train+

Per image of the (labelled) list: the raw window embeddings of a sliding-window pass are upsampled and summed over
the zero-padded canvas (no per-window normalisation, Q-S11), cropped to the image and normalised; k-means with
location features from the 5x5 grid; every cluster's majority class gives one prototype. Writes
`<save_dir>/prototypes/prototype_features.npy` (float32 [N, D]) and `prototype_labels.npy` (int32 [N]).

`--fix_location_features` uses the image's own (y/(H-1), x/(W-1)) grid; the default reproduces the original, which
takes the first H*W rows of the padded canvas' grid (misaligned for images smaller than the window, Q-S4).
"""
import os

import numpy as np
import tensorflow as tf
from absl import flags, logging

from common.cli import run_app
from common.data.aaf_reader import IMG_MEAN
from common.data.lists import read_labeled_image_list
from common.infer.outputs import load_image
from common.infer.sliding_window import as_predict_fn, sliding_window_scores, upsampled_outputs
from common.io import atomic_write, check_writable_dir
from common.models.factory import parse_int_list
from segsort import clustering, eval_utils
from segsort.model import define_embedding_flags, load_embedding_model

FLAGS = flags.FLAGS
PROTOTYPE_FILES = ('prototype_features.npy', 'prototype_labels.npy')


def define_flags(flag_values=FLAGS):
    """The original's flags (aaf_segsort.md 1.3) plus --fix_location_features / --progress."""
    fv = dict(flag_values=flag_values)
    flags.DEFINE_string('data_dir', '', 'Prefix joined to the list entries by plain concatenation.', **fv)
    flags.DEFINE_string('data_list', '', 'List file of "<image> <label>" lines (labels are used).', **fv)
    flags.DEFINE_string('input_size', '512,512', 'Window "H,W" the network is built for.', **fv)
    flags.DEFINE_string('strides', '512,512', 'Window strides "H,W".', **fv)
    flags.DEFINE_integer('num_classes', 21, 'Number of classes (unused, as in the original).', **fv)
    flags.DEFINE_integer('ignore_label', 255, 'Pixels with this label are left out.', **fv)
    flags.DEFINE_string('restore_from', '', 'Checkpoint prefix or snapshot directory.', **fv)
    flags.DEFINE_string('save_dir', '', 'Output root; files go to <save_dir>/prototypes/.', **fv)
    flags.DEFINE_string('colormap', 'voc', 'Unused (accepted for the original command lines).', **fv)
    flags.DEFINE_boolean('fix_location_features', False, 'Location grid of the image itself (fixes Q-S4).', **fv)
    flags.DEFINE_boolean('progress', True, 'Show a progress bar.', **fv)
    define_embedding_flags(flag_values)


def stitched_embedding(image, predict_fn, input_size, strides, embedding_dim):
    """Sum of the upsampled raw window embeddings over the padded canvas, cropped to the image, normalised.

    Returns:
      float32 array [H, W, D] of unit vectors.
    """
    summed = sliding_window_scores(image, predict_fn, input_size, strides, embedding_dim, init_with_zero=True,
                                   window_fn=upsampled_outputs)
    return clustering.normalize_embedding(summed).numpy()


def location_features(image_hw, input_size, fix=False):
    """Location features [H*W, 2] of the original (first H*W rows of the padded canvas grid) or, with `fix`, of
    the image itself."""
    height, width = image_hw
    if fix:
        return clustering.generate_location_features_np([height, width]).reshape(-1, 2).astype(np.float32)
    padded = [max(height, input_size[0]), max(width, input_size[1])]
    return clustering.generate_location_features_np(padded).reshape(-1, 2)[:height * width].astype(np.float32)


def image_prototypes(embedding, label, num_clusters, kmeans_iterations, ignore_label=255, input_size=None,
                     fix_location_features=False):
    """Prototypes of one image.

    Args:
      embedding: float [H, W, D] unit vectors.
      label: int [H, W] semantic labels.
      num_clusters: grid clusters per axis.
      kmeans_iterations: M/E iterations.
      input_size: window size (for the original's padded-canvas location grid).
    Returns:
      (features float32 [K, D], labels int32 [K]).
    """
    height, width, dim = embedding.shape
    grid = clustering.initialize_cluster_labels([num_clusters, num_clusters], [height, width])
    locations = location_features((height, width), input_size or (height, width), fix_location_features)
    features, labels, _ = eval_utils.extract_trained_prototypes(
        tf.constant(embedding.reshape(-1, dim)), tf.constant(locations), tf.reshape(grid, [-1]),
        num_clusters * num_clusters, kmeans_iterations, tf.constant(np.asarray(label, np.int32).reshape(-1)), 1,
        ignore_label, 'semantic')
    return features.numpy(), labels.numpy()


def save_prototypes(save_dir, features, labels):
    """Writes both .npy files atomically; returns their paths."""
    out_dir = os.path.join(save_dir, 'prototypes')
    paths = [os.path.join(out_dir, name) for name in PROTOTYPE_FILES]
    atomic_write(paths[0], lambda handle: np.save(handle, np.asarray(features, np.float32)))
    atomic_write(paths[1], lambda handle: np.save(handle, np.asarray(labels, np.int32)))
    return paths


def load_prototypes(prototype_dir, embedding_dim=None):
    """Reads prototype_features.npy / prototype_labels.npy with errors naming the file and the problem.

    Returns:
      (features float32 [N, D], labels int32 [N]).
    """
    paths = [os.path.join(prototype_dir, name) for name in PROTOTYPE_FILES]
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f'--prototype_dir: {path} not found (run segsort.extract_prototypes first)')
    try:
        features, labels = (np.load(path) for path in paths)
    except (ValueError, OSError) as err:
        raise ValueError(f'--prototype_dir: cannot read {prototype_dir}: {err}') from None
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f'--prototype_dir: {paths[0]} holds no prototypes (shape {features.shape})')
    if labels.shape != (features.shape[0],):
        raise ValueError(f'--prototype_dir: {paths[1]} has shape {labels.shape}, expected ({features.shape[0]},) '
                         f'like {paths[0]}')
    if embedding_dim is not None and features.shape[1] != embedding_dim:
        raise ValueError(f'--embedding_dim {embedding_dim} does not match the {features.shape[1]}-dimensional '
                         f'prototypes in {paths[0]}')
    return features.astype(np.float32), labels.astype(np.int32)


def check_list_flags(cfg, required):
    """Errors naming the flag for the list / window flags of the prototype and inference programs.

    Returns:
      (input_size, strides) parsed.
    """
    for name in required:
        if not getattr(cfg, name):
            raise ValueError(f'--{name} is required')
    if not os.path.isfile(cfg.data_list):
        raise FileNotFoundError(f'--data_list: list file not found: {cfg.data_list}')
    return parse_int_list(cfg.input_size, 'input_size', 2), parse_int_list(cfg.strides, 'strides', 2)


def extract_from_flags(cfg):
    """Runs the extraction of the flags; returns (features, labels, written paths)."""
    input_size, strides = check_list_flags(cfg, ('data_list', 'save_dir'))
    image_paths, label_paths = read_labeled_image_list(cfg.data_dir, cfg.data_list)
    check_writable_dir(cfg.save_dir, '--save_dir')
    model = load_embedding_model(cfg, input_size)  # kept alive: as_predict_fn holds it weakly
    predict_fn = as_predict_fn(model)
    from PIL import Image
    from tqdm import tqdm
    all_features, all_labels = [], []
    for image_path, label_path in tqdm(list(zip(image_paths, label_paths)), desc='prototypes',
                                       disable=not cfg.progress):
        image = load_image(image_path, IMG_MEAN)
        if not os.path.isfile(label_path):
            raise FileNotFoundError(f'{cfg.data_list}: label file not found: {label_path}')
        label = np.asarray(Image.open(label_path))
        if label.shape != image.shape[:2]:
            raise ValueError(f'{label_path}: label size {label.shape} differs from image size {image.shape[:2]}')
        embedding = stitched_embedding(image, predict_fn, input_size, strides, cfg.embedding_dim)
        features, labels = image_prototypes(embedding, label, cfg.num_clusters, cfg.kmeans_iterations,
                                            cfg.ignore_label, input_size, cfg.fix_location_features)
        all_features.append(features)
        all_labels.append(labels)
    features, labels = np.concatenate(all_features), np.concatenate(all_labels)
    paths = save_prototypes(cfg.save_dir, features, labels)
    logging.info('extracted %d prototypes', len(labels))
    return features, labels, paths


def run():
    """Console script `segsort-extract-prototypes`."""
    define_flags()

    def main(argv):
        del argv
        _, labels, paths = extract_from_flags(FLAGS)
        print(f'Total number of prototypes extracted: {len(labels)} -> {os.path.dirname(paths[0])}')

    run_app(main)


if __name__ == '__main__':
    run()
