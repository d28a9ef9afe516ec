"""tf.data input pipelines around the AAF / SegSort readers (training and inference).

Replaces the originals' `slice_input_producer` + `tf.train.batch` queues:

* training (`build_segmentation_dataset`): per-epoch full shuffle of the list, infinite repeat, parallel decode and
  augmentation (AUTOTUNE), batching, prefetch. Every sample gets its own stateless seed (from one base seed), so the
  augmentations are reproducible given `seed` even when the map runs in parallel; `deterministic=True` also fixes
  the element order.
* inference (`build_inference_dataset`): list order, no augmentation, whole images, one element per list line with
  its image path.

Bad input is reported with the list file, the line number and the path(s): missing/unreadable files are found when
the dataset is built; non-image files, label/image size mismatches and label values outside [0, num_classes) other
than `ignore_label` are checked per sample inside the pipeline (InvalidArgumentError whose message names the
files). With `skip_bad_samples=True` such samples are logged (absl) and dropped instead.
"""
import os
import random

import numpy as np
import tensorflow as tf
from absl import logging

from common.data import aaf_reader
from common.data.aaf_reader import IMG_MEAN
from common.data.datasets import get_label_map, read_label_indices
from common.data.lists import read_labeled_image_list, read_unsup_labeled_image_list

AUTOTUNE = tf.data.AUTOTUNE
READERS = ('aaf', 'segsort', 'segsort_unsup')
LABEL_DECODERS = ('png', 'palette')
# Leading bytes of the formats tf.io.decode_image understands.
_IMAGE_MAGICS = (b'\xff\xd8\xff', b'\x89PNG', b'GIF8', b'BM')
# The map functions are plain graph code; skipping AutoGraph conversion makes building the pipeline faster.
_graph_fn = tf.autograph.experimental.do_not_convert


def input_options(deterministic=True):
    """tf.data options of every training input pipeline (AAF/SegSort here, PSA's in `psa_transforms` and
    `affinitynet.data`).

    Returns:
      tf.data.Options: the given element order; AUTOTUNE values mean "one call per core" and a small prefetch
      buffer; one thread per per-sample op.
    """
    options = tf.data.Options()
    options.deterministic = bool(deterministic)
    # The autotuning model is off: its optimisation thread sleeps up to a minute between rounds, and destroying the
    # iterator at the end of a training run waited for it (30-60 s of idle time per run, measured with TF 2.21;
    # 52 s after PSA's 300-step classifier); throughput is the same.
    options.autotune.enabled = False
    # Per-sample ops are small: parallelism across samples beats splitting each op over threads.
    options.threading.max_intra_op_parallelism = 1
    return options


def load_samples(data_dir, data_list, reader='aaf', check_files=True, skip_bad_samples=False, hed_dir=None):
    """Reads a list file into per-sample paths with their 1-based line numbers.

    Args:
      data_dir, data_list: as `read_labeled_image_list` (data_dir is prepended by string concatenation).
      reader: 'aaf' / 'segsort' -> (image, label); 'segsort_unsup' -> (image, label, hed) with the HED path
        `label.replace('segcls', 'hed')` (quirk Q-S2).
      check_files: check that every file exists and is readable.
      skip_bad_samples: log and drop samples with missing files instead of raising.
      hed_dir: 'segsort_unsup' only: read the over-segmentations from `hed_dir/<label basename>` (Q-S2 fix).

    Returns:
      (line_numbers list[int], paths list[tuple[str, ...]]).

    Raises:
      FileNotFoundError naming the list file, line number and path of a missing/unreadable file;
      ValueError if the list is empty or no sample is left.
    """
    if reader not in READERS:
        raise ValueError(f'reader must be one of {READERS}, got {reader!r}')
    if reader == 'segsort_unsup':
        columns = read_unsup_labeled_image_list(data_dir, data_list, hed_dir)
        kinds = ('image', 'label', 'HED over-segmentation')
    else:
        columns = read_labeled_image_list(data_dir, data_list)
        kinds = ('image', 'label')
    line_numbers, samples = [], []
    for index, paths in enumerate(zip(*columns)):
        line_no = index + 1
        problem = None
        if check_files:
            for kind, path in zip(kinds, paths):
                if not os.path.isfile(path):
                    problem = f'{data_list} line {line_no}: {kind} file not found: {path}'
                elif not os.access(path, os.R_OK):
                    problem = f'{data_list} line {line_no}: {kind} file not readable: {path}'
                if problem:
                    break
        if problem:
            if not skip_bad_samples:
                raise FileNotFoundError(problem)
            logging.warning('skipping bad sample: %s', problem)
            continue
        line_numbers.append(line_no)
        samples.append(tuple(paths))
    if not samples:
        raise ValueError(f'no usable samples in list file {data_list}')
    return line_numbers, samples


def _is_image(contents):
    return tf.reduce_any([tf.equal(tf.strings.substr(contents, 0, len(m)), m) for m in _IMAGE_MAGICS])


# End markers of complete JPEG (EOI) and PNG (IEND chunk) files, looked for in the last _TAIL bytes: a file cut short
# (an interrupted copy or download) keeps its valid header, and TensorFlow's decoder would then fail without naming
# the file. Inside JPEG entropy-coded data 0xFF is always followed by 0x00 or a restart code, so FFD9 near the end
# means the image is complete; the tail allows for padding some writers add after the end marker.
_END_MARKERS = ((b'\xff\xd8\xff', b'\xff\xd9'), (b'\x89PNG', b'IEND'))
_TAIL = 64


def _is_complete(contents):
    """False for a JPEG or PNG whose end marker is missing from its last bytes (other formats: True)."""
    size = tf.strings.length(contents)
    tail = tf.strings.substr(contents, tf.maximum(size - _TAIL, 0), _TAIL)
    complete = tf.constant(True)
    for magic, end in _END_MARKERS:
        is_format = tf.equal(tf.strings.substr(contents, 0, len(magic)), magic)
        has_end = tf.size(tf.strings.split(tail, sep=end)) > 1
        complete = tf.logical_and(complete, tf.logical_or(tf.logical_not(is_format), has_end))
    return complete


def _hw_string(tensor):
    shape = tf.strings.as_string(tf.shape(tensor)[:2])
    return tf.strings.join([shape[0], 'x', shape[1]])


def _first_failure(checks):
    """(all_ok, message of the first failing check or '') for a list of (ok, message) pairs."""
    ok = tf.reduce_all([c for c, _ in checks])
    message = tf.constant('')
    for check, text in reversed(checks):
        message = tf.where(check, message, text)
    return ok, message


class _SampleDecoder:
    """Reads, decodes and validates one sample; shared by the training and inference pipelines."""

    def __init__(self, data_list, img_mean, label_decoder, label_map, num_classes, ignore_label, num_paths=2):
        self.num_paths = num_paths
        if label_decoder not in LABEL_DECODERS:
            raise ValueError(f'label_decoder must be one of {LABEL_DECODERS}, got {label_decoder!r}')
        self.data_list = str(data_list)
        self.img_mean = tuple(float(v) for v in img_mean)
        self.label_decoder = label_decoder
        lut = get_label_map(label_map)
        self.lut = None if lut is None else tf.constant(lut, tf.uint8)
        self.num_classes = num_classes
        self.ignore_label = ignore_label

    def _decode_label(self, path, contents):
        if self.label_decoder == 'palette':
            label = tf.numpy_function(lambda p: read_label_indices(p.decode())[..., None], [path], tf.uint8,
                                      stateful=False)
            label.set_shape([None, None, 1])
        else:
            label = aaf_reader.decode_label(contents)
        return label

    def __call__(self, line_no, paths):
        """Returns (ok, message, image, label[, hed]); image/labels are empty when a file is not an image."""
        prefix = tf.strings.join([self.data_list, ' line ', tf.strings.as_string(line_no), ': '])
        paths = [paths[i] for i in range(self.num_paths)]
        contents = [tf.io.read_file(p) for p in paths]
        kinds = ['image', 'label', 'HED over-segmentation'][:len(paths)]
        magic_checks = [(_is_image(c), tf.strings.join([prefix, kind, ' file ', p, ' is not a readable image']))
                        for c, kind, p in zip(contents, kinds, paths)]
        magic_checks += [(_is_complete(c), tf.strings.join([prefix, kind, ' file ', p, ' is truncated (its end '
                                                            'marker is missing)']))
                         for c, kind, p in zip(contents, kinds, paths)]
        decodable, _ = _first_failure(magic_checks)
        img = tf.cond(decodable, lambda: aaf_reader.decode_image(contents[0], self.img_mean),
                      lambda: tf.zeros([0, 0, 3], tf.float32))
        labels = []
        for i in range(1, len(paths)):
            label = tf.cond(decodable, lambda i=i: self._decode_label(paths[i], contents[i]),
                            lambda: tf.zeros([0, 0, 1], tf.uint8))
            if i == 1 and self.lut is not None:
                label = tf.gather(self.lut, tf.cast(label, tf.int32))
            labels.append(label)
        checks = list(magic_checks)
        for label, kind, path in zip(labels, kinds[1:], paths[1:]):
            same = tf.reduce_all(tf.equal(tf.shape(label)[:2], tf.shape(img)[:2]))
            checks.append((same, tf.strings.join([prefix, kind, ' ', path, ' has size ', _hw_string(label),
                                                  ' but image ', paths[0], ' has size ', _hw_string(img)])))
        if self.num_classes is not None:
            values = tf.cast(labels[0], tf.int32)
            valid = (values < self.num_classes) | (values == self.ignore_label)
            bad_value = tf.reduce_max(tf.where(valid, -1, values))
            checks.append((tf.reduce_all(valid), tf.strings.join(
                [prefix, 'label ', paths[1], ' has value ', tf.strings.as_string(bad_value), ' outside [0, ',
                 str(self.num_classes), ') other than ignore label ', str(self.ignore_label)])))
        ok, message = _first_failure(checks)
        return (ok, message, img, *labels)


def _log_bad_sample(message):
    logging.warning('skipping bad sample: %s', message.numpy().decode(errors='replace'))
    return False


def _keep_or_log(ok, message):
    return tf.cond(ok, lambda: tf.constant(True),
                   lambda: tf.py_function(_log_bad_sample, [message], tf.bool))


def _validated(dataset, skip_bad_samples, deterministic):
    """Applies the validation outcome: raise (strict) or log and drop (skip) bad samples."""
    if skip_bad_samples:
        dataset = dataset.filter(_graph_fn(lambda ok, message, *rest: _keep_or_log(ok, message)))
        # Files that pass the header check but fail to decode (e.g. truncated) are dropped too.
        return dataset.ignore_errors(log_warning=True)

    def check(ok, message, *rest):
        with tf.control_dependencies([tf.debugging.Assert(ok, [message], summarize=1)]):
            return (ok, message, *[tf.identity(t) for t in rest])
    return dataset.map(_graph_fn(check), num_parallel_calls=AUTOTUNE, deterministic=deterministic)


def _base_seed(seed):
    return random.SystemRandom().randrange(2 ** 31 - 1) if seed is None else int(seed)


def build_segmentation_dataset(data_dir, data_list, input_size, batch_size, random_scale=False, random_mirror=False,
                               random_crop=False, ignore_label=255, img_mean=IMG_MEAN, num_classes=None, seed=None,
                               deterministic=None, shuffle=True, repeat=True, drop_remainder=True,
                               skip_bad_samples=False, input_context=None, reader='aaf', num_clusters=(5, 5),
                               label_decoder='png', label_map=None, check_files=True, shuffle_buffer=None,
                               hed_dir=None):
    """Training dataset of the AAF / SegSort readers (the originals' ImageReader / SegSortImageReader + dequeue).

    Args:
      data_dir: root prepended to the list entries by string concatenation (keep the trailing '/').
      data_list: list file of `<image> <label>` lines.
      input_size: (crop_h, crop_w) of the training crops; None = whole images, no augmentation (batch_size must be
        1 unless all images share a size).
      batch_size: GLOBAL batch size; with `input_context` each replica gets
        `input_context.get_per_replica_batch_size(batch_size)`.
      random_scale, random_mirror, random_crop: the originals' augmentation flags (scale U[0.5, 2.0), mirror p=0.5,
        random vs centre crop); applied only when input_size is given.
      ignore_label: pad value of labels and the value allowed besides [0, num_classes) (255).
      img_mean: RGB mean subtracted from images.
      num_classes: if given, labels with other values than [0, num_classes) and ignore_label are bad samples.
      seed: base seed of the shuffle and of the per-sample augmentation seeds; None = fresh random seed.
      deterministic: keep element order fixed under parallel map (contents are seed-determined either way);
        None (default) = `not shuffle`, i.e. list order is kept exactly when shuffle=False, and elements may be
        produced out of order (faster) when shuffling.
      shuffle: per-epoch full shuffle of the list (the original shuffles when training).
      repeat: repeat forever (the original's queue); False = one pass.
      drop_remainder: drop the last incomplete batch (static batch dimension).
      skip_bad_samples: log (absl) and drop bad samples instead of raising.
      input_context: `tf.distribute.InputContext` -> shard the list by input pipeline and use the per-replica
        batch size (use with `strategy.distribute_datasets_from_function`).
      reader: 'aaf' -> (images float32 [B,h,w,3], labels uint8 [B,h,w,1]);
        'segsort' -> (images, semantic_labels int32 [B,h,w,1], cluster_labels int32 [B,h,w,1],
                      loc_features float32 [B,h,w,2]);
        'segsort_unsup' -> (images, labels int32 [B,h,w,1], cluster_labels int32 [B,h,w,1]) with HED paths
                      `label.replace('segcls', 'hed')`.
        (Label dtypes as listed when input_size is given; without it labels stay as decoded: uint8 for 'aaf' and
        'segsort_unsup', int32 for 'segsort'.)
      num_clusters: SegSort initial grid [ky, kx] (or int).
      label_decoder: 'png' (decode_png grayscale, as the originals) or 'palette' (raw palette indices via PIL, for
        SegmentationClassAug / GTA5 labels).
      label_map: None, 'cityscapes' (labelId -> trainId) or a 256-entry table applied to the (semantic) label.
      check_files: check every listed file exists when building.
      shuffle_buffer: shuffle buffer size (default: the whole list).
      hed_dir: 'segsort_unsup': over-segmentations from `hed_dir/<label basename>` instead of the original's
        `label.replace('segcls', 'hed')` (Q-S2).

    Returns:
      a `tf.data.Dataset` of tuples as described under `reader`, prefetched.
    """
    line_numbers, samples = load_samples(data_dir, data_list, reader, check_files, skip_bad_samples, hed_dir)
    decoder = _SampleDecoder(data_list, img_mean, label_decoder, label_map, num_classes, ignore_label,
                             num_paths=len(samples[0]))
    if deterministic is None:
        deterministic = not shuffle
    base_seed = _base_seed(seed)
    per_replica_batch = batch_size
    files = tf.data.Dataset.from_tensor_slices((np.asarray(line_numbers, np.int64), np.asarray(samples)))
    if input_context is not None:
        per_replica_batch = input_context.get_per_replica_batch_size(batch_size)
        files = files.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        base_seed = base_seed + 7919 * input_context.input_pipeline_id
    if shuffle:
        files = files.shuffle(shuffle_buffer or len(samples), seed=base_seed, reshuffle_each_iteration=True)
    if repeat:
        files = files.repeat()
    sample_seeds = tf.data.Dataset.random(seed=base_seed + 1).batch(2)
    dataset = tf.data.Dataset.zip((files, sample_seeds))

    def decode(sample, sample_seed):
        ok, message, *tensors = decoder(*sample)
        return (ok, message, sample_seed, *tensors)

    dataset = dataset.map(_graph_fn(decode), num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    dataset = _validated(dataset, skip_bad_samples, deterministic)
    augment_args = (input_size, random_scale, random_mirror, random_crop, ignore_label)

    def transform(ok, message, sample_seed, img, *labels):
        if reader == 'aaf':
            return aaf_reader.augment(img, labels[0], *augment_args, seed=sample_seed, label_dtype=tf.uint8)
        if reader == 'segsort':
            return aaf_reader.segsort_from_decoded(img, labels[0], *augment_args, num_clusters=num_clusters,
                                                   seed=sample_seed)[:4]
        return aaf_reader.unsup_segsort_from_decoded(img, labels[0], labels[1], *augment_args, seed=sample_seed)

    dataset = dataset.map(_graph_fn(transform), num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    dataset = dataset.batch(per_replica_batch, drop_remainder=drop_remainder)
    return dataset.with_options(input_options(deterministic)).prefetch(AUTOTUNE)


def build_inference_dataset(data_dir, data_list, img_mean=IMG_MEAN, ignore_label=255, num_classes=None,
                            skip_bad_samples=False, label_decoder='png', label_map=None, check_files=True,
                            input_context=None):
    """Inference/evaluation dataset: list order, whole images, no augmentation, unbatched.

    Single-column (test) lines use the image as its own "label" (decoded to one channel, as the originals).

    Args: as `build_segmentation_dataset` (num_classes=None skips the value check, e.g. for test lists).

    Returns:
      a `tf.data.Dataset` of (image float32 [H, W, 3] mean-subtracted RGB, label uint8 [H, W, 1],
      image_path string scalar), one element per list line in list order.
    """
    line_numbers, samples = load_samples(data_dir, data_list, 'aaf', check_files, skip_bad_samples)
    decoder = _SampleDecoder(data_list, img_mean, label_decoder, label_map, num_classes, ignore_label)
    dataset = tf.data.Dataset.from_tensor_slices((np.asarray(line_numbers, np.int64), np.asarray(samples)))
    if input_context is not None:
        dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    dataset = dataset.map(_graph_fn(lambda n, paths: (*decoder(n, paths), paths[0])), num_parallel_calls=AUTOTUNE,
                          deterministic=True)
    dataset = _validated(dataset, skip_bad_samples, True)
    return dataset.map(_graph_fn(lambda ok, msg, img, label, path: (img, label, path))).prefetch(AUTOTUNE)
