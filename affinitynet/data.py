"""AffinityNet training labels from the low/high-alpha CRF dictionaries (PSA `voc12/data.py` VOC12AffDataset)."""
import os

import numpy as np

from affinitynet import pairs

FEATURE_STRIDE = 8


def dict_to_stack(crf_dict):
    """[H, W, k+1] float32 stack of a CRF dictionary's values in its insertion order (bg first)."""
    return np.stack([np.asarray(v, np.float32) for v in crf_dict.values()], axis=-1)


def block_mean(array, block=FEATURE_STRIDE):
    """Mean over block x block tiles of an [H, W, C] array (skimage `block_reduce(x, (b, b, 1), np.mean)`:
    a partial last tile is padded with zeros and still divided by b*b)."""
    array = np.asarray(array, np.float32)
    height, width = array.shape[:2]
    pad_h, pad_w = -height % block, -width % block
    if pad_h or pad_w:
        array = np.pad(array, ((0, pad_h), (0, pad_w), (0, 0)))
    h, w = array.shape[0] // block, array.shape[1] // block
    return array.reshape(h, block, w, block, -1).mean(axis=(1, 3), dtype=np.float64).astype(np.float32)


def label_from_pooled(pooled):
    """uint8 [h, w] affinity label of the pooled [h, w, 2(k+1)] la|ha stack (PSA's rule).

    Confident foreground comes from the low-alpha CRF (its argmax position, 255 where that is background),
    confident background from the high-alpha CRF (overrides), and blocks with no score (crop padding) are 255.
    Values are positions in the dictionaries' order, not class ids; only their equality matters.
    """
    half = pooled.shape[-1] // 2
    no_score = np.max(pooled, axis=-1) < 1e-5
    la_idx = np.argmax(pooled[..., :half], axis=-1)
    ha_idx = np.argmax(pooled[..., half:], axis=-1)
    label = la_idx.astype(np.uint8)
    label[la_idx == 0] = 255
    label[ha_idx == 0] = 0
    label[no_score] = 255
    return label


def affinity_label_from_crf(la, ha, radius=5):
    """Pair labels of one (cropped) image from its la / ha CRF scores.

    Args:
      la, ha: low / high-alpha CRF dicts ({0: bg, c+1: prob}) or their [H, W, k+1] stacks (same order).
        H and W are the crop size (a multiple of 8 in the original, 448).
      radius: pair radius (5).
    Returns:
      dict: pooled [H/8, W/8, 2(k+1)] float32, label [H/8, W/8] uint8, bg / fg / neg float32 [D, P] masks.
    """
    la = dict_to_stack(la) if isinstance(la, dict) else np.asarray(la, np.float32)
    ha = dict_to_stack(ha) if isinstance(ha, dict) else np.asarray(ha, np.float32)
    if la.shape != ha.shape:
        raise ValueError(f'la and ha CRF scores differ in shape: {la.shape} vs {ha.shape}')
    pooled = block_mean(np.concatenate([la, ha], axis=-1))
    label = label_from_pooled(pooled)
    if label.shape[0] != label.shape[1]:
        raise ValueError(f'affinity labels need a square crop, got pooled size {label.shape}')
    bg, fg, neg = pairs.extract_affinity_labels(label, label.shape[0], radius)
    return {'pooled': pooled, 'label': label, 'bg': bg, 'fg': fg, 'neg': neg}


def load_crf_stack(la_path, ha_path, image_size):
    """[H, W, 2(k+1)] la then ha CRF scores of one image; missing files and sizes unlike the image are named."""
    from affinitynet.cam import load_dict
    stacks = []
    for path, what in ((la_path, 'la CRF'), (ha_path, 'ha CRF')):
        stack = dict_to_stack(load_dict(path, what))
        if stack.shape[:2] != tuple(image_size):
            raise ValueError(f'{what} file {path}: size {stack.shape[:2]} differs from its image {tuple(image_size)}')
        stacks.append(stack)
    if stacks[0].shape != stacks[1].shape:
        raise ValueError(f'la CRF {la_path} and ha CRF {ha_path} hold different classes')
    return np.concatenate(stacks, axis=-1)


def aff_training_example(img, crf_stack, crop_size=448, network='resnet38', radius=5, rng=None):
    """One train_aff example: VOC12AffDataset's transforms, then the pair labels.

    Returns:
      (image float32 [crop, crop, 3], bg, fg, neg float32 [D, P]).
    """
    from common.data.psa_transforms import psa_aff_train_transform
    image, pooled = psa_aff_train_transform(img, crf_stack, crop_size, network, rng=rng)
    label = label_from_pooled(pooled)
    bg, fg, neg = pairs.extract_affinity_labels(label, crop_size // FEATURE_STRIDE, radius)
    return image, bg, fg, neg


def build_aff_dataset(list_path, voc12_root, la_crf_dir, ha_crf_dir, batch_size, crop_size=448,
                      network='resnet38', radius=5, seed=0, input_context=None, repeat=True, shuffle=True,
                      layout_independent=False):
    """tf.data input of train_aff: (image [N, crop, crop, 3], bg, fg, neg [N, D, P]) batches (drop_last).

    Each element's augmentation draws come from `random.Random` seeded by (seed, shard, element index), so a
    resumed run sees the same data; `layout_independent` (see `shard_and_number`) seeds by (seed, epoch, list
    position) instead, the same samples for any number of workers.
    """
    import random
    import tensorflow as tf
    from common.data.lists import check_listed_files, load_img_name_list
    from common.data.pipeline import input_options
    from common.data.psa_transforms import read_rgb, shard_and_number

    names = load_img_name_list(list_path)
    check_listed_files([os.path.join(voc12_root, 'JPEGImages', n + '.jpg') for n in names], list_path)
    for kind, folder in (('la CRF', la_crf_dir), ('ha CRF', ha_crf_dir)):
        check_listed_files([os.path.join(folder, n + '.npy') for n in names], list_path, kind)
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    side = crop_size // FEATURE_STRIDE
    rows, cols = pairs.from_region(radius, (side, side))
    num_dirs = len(pairs.search_directions(radius))
    ds, base_seed = shard_and_number(tf.data.Dataset.from_tensor_slices(names), len(names), input_context, shuffle,
                                     repeat, seed, layout_independent)

    def load(name, element_index):
        name = name.decode() if isinstance(name, bytes) else str(name)
        img = read_rgb(os.path.join(voc12_root, 'JPEGImages', name + '.jpg'))
        stack = load_crf_stack(os.path.join(la_crf_dir, name + '.npy'), os.path.join(ha_crf_dir, name + '.npy'),
                               (img.size[1], img.size[0]))
        rng = random.Random(base_seed * 2_147_483_647 + int(element_index))
        return aff_training_example(img, stack, crop_size, network, radius, rng)

    def map_fn(name, element_index):
        out = tf.numpy_function(load, [name, element_index], [tf.float32] * 4, stateful=False)
        out[0].set_shape([crop_size, crop_size, 3])
        for t in out[1:]:
            t.set_shape([num_dirs, rows * cols])
        return tuple(out)

    # each element's draws are seeded by its index, so parallel loading gives the same batches
    ds = ds.map(map_fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=True).with_options(input_options(deterministic=True))
    return ds.prefetch(tf.data.AUTOTUNE)
