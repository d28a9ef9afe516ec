"""SegSort kNN inference: single scale over the full canvas (`inference_segsort.py`, aaf_segsort.md 7.6) and
multi-scale + flip with per-window clustering and votes (`inference_segsort_msc.py`, 7.7; see
`segsort.inference_msc`).

    python -m segsort.inference --data_dir VOCdevkit/ --data_list dataset/voc12/val.txt --input_size 720,720 \
        --restore_from snapshots/segsort/stage1/model.ckpt-30000 --prototype_dir stage1/results/train+/prototypes \
        --k_in_nearest_neighbors 15 --embedding_dim 32 --num_clusters 5 --kmeans_iterations 10 \
        --save_dir snapshots/segsort/stage1/results/val

Single scale: the image is padded bottom/right to `--input_size` (the network's size), embedded in one pass,
upsampled, clustered by k-means with location features over the whole canvas (padding included, Q-S8), and every
cluster takes the majority label of its k nearest training prototypes. Images larger than `--input_size` are
rejected with an error (the original centre-cropped and then mis-sliced them, Q-S8).
Writes `<save_dir>/gray/<name>.png` and `<save_dir>/color/<name>.png`; benchmark with `common.eval.benchmark`.
"""
import numpy as np
import tensorflow as tf
from absl import flags

from common.cli import run_app
from common.data.aaf_reader import IMG_MEAN
from common.data.lists import read_labeled_image_list
from common.infer.multiscale import multiscale_predict
from common.infer.outputs import load_image, prediction_basename, save_prediction
from common.io import check_writable_dir
from common.infer.sliding_window import as_predict_fn, pad_to_window
from common.ops.resize import resize_bilinear_legacy
from segsort import clustering, eval_utils
from segsort.extract_prototypes import check_list_flags, load_prototypes
from segsort.model import define_embedding_flags, load_embedding_model

FLAGS = flags.FLAGS


def define_flags(msc, flag_values=FLAGS):
    """Flags of `inference_segsort.py` (msc=False) or `inference_segsort_msc.py` (msc=True)."""
    fv = dict(flag_values=flag_values)
    flags.DEFINE_string('data_dir', '', 'Prefix joined to the list entries by plain concatenation.', **fv)
    flags.DEFINE_string('data_list', '', 'List file (two columns, or one column of images).', **fv)
    flags.DEFINE_string('input_size', '512,512', 'Canvas (single scale) / window (msc) "H,W" of the network.', **fv)
    flags.DEFINE_string('strides', '512,512', 'Window strides "H,W" (msc; unused by single scale, as the '
                        'original).', **fv)
    flags.DEFINE_integer('num_classes', 21, 'Number of classes (msc votes are kept for labels below it).', **fv)
    flags.DEFINE_integer('ignore_label', 255, 'Label id of void pixels.', **fv)
    flags.DEFINE_string('restore_from', '', 'Checkpoint prefix or snapshot directory.', **fv)
    flags.DEFINE_string('prototype_dir', '', 'Directory of prototype_features.npy / prototype_labels.npy.', **fv)
    flags.DEFINE_integer('k_in_nearest_neighbors', 15, 'k of the kNN vote.', **fv)
    flags.DEFINE_string('save_dir', '', 'Output directory (gray/ and color/).', **fv)
    flags.DEFINE_string('colormap', 'voc', 'voc, cityscapes, or an original colormap*.mat file.', **fv)
    flags.DEFINE_boolean('fix_basename', False, 'Replace only the ".jpg" extension of output names.', **fv)
    flags.DEFINE_boolean('progress', True, 'Show a progress bar.', **fv)
    if msc:
        flags.DEFINE_boolean('flip_aug', False, 'Add left-right flipped passes.', **fv)
        flags.DEFINE_boolean('scale_aug', False, 'Scales 0.5, 0.75, 1, 1.25, 1.5, 1.75 instead of 1.', **fv)
    define_embedding_flags(flag_values)


class KnnClassifier:
    """Clusters embeddings with location features and labels each cluster by kNN over training prototypes.

    Args:
      prototype_features: float [N, D] unit rows; prototype_labels: int [N].
      k: neighbours; num_clusters: grid per axis; kmeans_iterations: M/E iterations.
    """

    def __init__(self, prototype_features, prototype_labels, k, num_clusters, kmeans_iterations):
        if k > len(prototype_labels):
            raise ValueError(f'--k_in_nearest_neighbors {k} exceeds the {len(prototype_labels)} training '
                             f'prototypes')
        self.features = tf.constant(prototype_features, tf.float32)
        self.labels = tf.constant(prototype_labels, tf.int32)
        self.k, self.num_clusters, self.kmeans_iterations = k, num_clusters, kmeans_iterations

    def check_dim(self, embedding_dim):
        if embedding_dim != self.features.shape[1]:
            raise ValueError(f'the network\'s {embedding_dim}-dimensional embedding does not match the '
                             f'{self.features.shape[1]}-dimensional training prototypes (--embedding_dim / '
                             f'--prototype_dir)')

    def cluster(self, embedding, locations):
        """k-means of [B, H, W, D] unit embeddings with [B, H, W, 2] locations -> int64 [B, H, W]."""
        with_location = clustering.normalize_embedding(tf.concat([embedding, locations], -1))
        return clustering.kmeans(with_location, [self.num_clusters, self.num_clusters], self.kmeans_iterations)

    def label_image(self, embedding, locations):
        """Single-scale labelling of one canvas: [H, W, D], [H, W, 2] -> int32 [H, W]."""
        self.check_dim(embedding.shape[-1])
        clusters = self.cluster(embedding[tf.newaxis], locations[tf.newaxis])
        test_prototypes = clustering.calculate_prototypes_from_labels(embedding, clusters)
        semantic, _ = eval_utils.predict_semantic_instance_labels(clusters, test_prototypes, self.features,
                                                                  self.labels, None, self.k)
        return semantic[0]

    def window_votes(self, embedding, num_classes):
        """Per-window kNN votes of `inference_segsort_msc.py`: [B, h, w, D] unit -> float32 [B, h, w, C].

        Every window is clustered on its own grid with (y/h, x/w) locations; each pixel receives one vote per
        neighbour label (< num_classes) of its cluster's k nearest prototypes (top_k sorted).
        """
        self.check_dim(embedding.shape[-1])
        batch, height, width = embedding.shape[:3]
        locations = tf.tile(clustering.generate_location_features([height, width], 'float')[tf.newaxis],
                            [batch, 1, 1, 1])
        clusters = self.cluster(embedding, locations)
        max_clusters = self.num_clusters * self.num_clusters
        # Per-window compact ids (the original's tf.unique) do not change which pixels share a prototype.
        offsets = tf.range(batch, dtype=tf.int64)[:, tf.newaxis, tf.newaxis] * max_clusters
        flat_ids = tf.reshape(clusters + offsets, [-1])
        prototypes = clustering.calculate_prototypes_from_labels(embedding, flat_ids, batch * max_clusters)
        similarities = tf.matmul(prototypes, self.features, transpose_b=True)
        similarities = tf.where(tf.math.is_nan(similarities), tf.zeros_like(similarities), similarities)
        _, neighbours = tf.nn.top_k(similarities, k=self.k, sorted=True)
        votes = tf.reduce_sum(tf.one_hot(tf.gather(self.labels, neighbours), num_classes), axis=1)  # [B*K, C]
        return tf.reshape(tf.gather(votes, flat_ids), [batch, height, width, num_classes]).numpy()


def single_scale_locations(height, width, canvas_hw, ignore_label=255):
    """(y/H, x/W) of the image with ignore_label/H, ignore_label/W in the padded area (the reader's features)."""
    loc = np.full(tuple(canvas_hw) + (2,), 0.0, np.float32)
    loc[..., 0], loc[..., 1] = ignore_label / height, ignore_label / width
    loc[:height, :width] = clustering.generate_location_features([height, width], 'float').numpy()
    return loc


def predict_single_scale(image, predict_fn, classifier, input_size, ignore_label=255):
    """`inference_segsort.py` on one image: float [H, W, 3] mean-subtracted -> uint8 [H, W]."""
    height, width = image.shape[:2]
    if height > input_size[0] or width > input_size[1]:
        raise ValueError(f'image of {height}x{width} is larger than --input_size {input_size[0]},{input_size[1]}; '
                         f'use a larger --input_size (multiple of 48) or segsort.inference_msc')
    canvas = pad_to_window(image, input_size)
    outputs = predict_fn(canvas[np.newaxis])
    embedding = clustering.normalize_embedding(resize_bilinear_legacy(outputs, input_size))[0]
    locations = tf.constant(single_scale_locations(height, width, input_size, ignore_label))
    labels = classifier.label_image(embedding, locations).numpy()
    return labels[:height, :width].astype(np.uint8)


def predict_msc(image, predict_fn, classifier, input_size, strides, num_classes, flip_aug=False, scale_aug=False):
    """`inference_segsort_msc.py` on one image: summed per-window votes over scales/flips, argmax -> uint8."""

    def window_fn(outputs, window_size):
        embedding = clustering.normalize_embedding(resize_bilinear_legacy(outputs, window_size))
        return classifier.window_votes(embedding, num_classes)

    return multiscale_predict(image, predict_fn, input_size, strides, num_classes, flip_aug=flip_aug,
                              scale_aug=scale_aug, init_with_zero=True, average=False, window_fn=window_fn)


def predict_list(cfg, msc):
    """Predicts every image of the list and writes gray/ and color/ PNGs; returns the written paths."""
    input_size, strides = check_list_flags(cfg, ('data_list', 'save_dir', 'prototype_dir'))
    features, labels = load_prototypes(cfg.prototype_dir, cfg.embedding_dim)
    classifier = KnnClassifier(features, labels, cfg.k_in_nearest_neighbors, cfg.num_clusters,
                               cfg.kmeans_iterations)
    image_paths, _ = read_labeled_image_list(cfg.data_dir, cfg.data_list)
    check_writable_dir(cfg.save_dir, '--save_dir')
    model = load_embedding_model(cfg, input_size)  # kept alive: as_predict_fn holds it weakly
    predict_fn = as_predict_fn(model)
    from tqdm import tqdm
    written = []
    for image_path in tqdm(image_paths, desc='inference', unit='img', disable=not cfg.progress):
        image = load_image(image_path, IMG_MEAN)
        if msc:
            prediction = predict_msc(image, predict_fn, classifier, input_size, strides, cfg.num_classes,
                                     cfg.flip_aug, cfg.scale_aug)
        else:
            prediction = predict_single_scale(image, predict_fn, classifier, input_size, cfg.ignore_label)
        written.append(save_prediction(prediction, cfg.save_dir, prediction_basename(image_path, cfg.fix_basename),
                                       cfg.colormap))
    return written


def run(msc=False):
    """Console scripts `segsort-inference` and (msc=True) `segsort-inference-msc`."""
    define_flags(msc=msc)

    def main(argv):
        del argv
        written = predict_list(FLAGS, msc=msc)
        print(f'wrote {len(written)} predictions to {FLAGS.save_dir}')

    run_app(main)


if __name__ == '__main__':
    run()
