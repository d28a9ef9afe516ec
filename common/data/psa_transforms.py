"""PSA / A2GNN data transforms (psa `tool/imutils.py`, torchvision 0.2 ColorJitter) and the PSA cls tf.data input.

Channels-last (HWC) throughout; the originals' final HWC->CHW transpose is dropped.
Every random step is a pure function of its input plus its draws: pass the draws explicitly (`target_long=`,
`flip=`, `factors=`/`order=`, `box=`) or an `rng`. `rng` may be None (Python's global `random`, like the originals),
an int seed or a `random.Random`. The calls are made in the originals' order with Python's `random` API
(randint, random, uniform, shuffle, randrange), so a `random.Random(s)` reproduces the original's draws for seed s.

Pad conventions (psa_a2gnn.md 4.4 / quirk 4):
  - PSA train_cls: `random_crop` AFTER normalisation, fill 0 (the mean colour).
  - PSA train_aff: joint crop of uint8 image + CRF stack BEFORE normalisation, fill 0 (-> black after normalising).
  - A2GNN train_gated_aff: joint crop BEFORE normalisation, fill 255 (white image, label 255 = crop padding).
  - Inference (infer_aff, A2GNN): `pad_to_multiple` right/bottom after normalisation with 0.
"""
import numbers
import os
import random as _random

import numpy as np
from PIL import Image, ImageEnhance

from common.data.aaf_reader import IMG_MEAN

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG_MEAN_RGB = IMG_MEAN  # the Caffe ImageNet mean, also the AAF/SegSort mean
PSA_MSF_SCALES = (1.0, 0.5, 1.5, 2.0)
SEAM_MSF_SCALES = (0.5, 1.0, 1.5, 2.0)
NETWORKS = ('resnet38', 'vgg16')


def _as_random(rng):
    if rng is None:
        return _random
    if isinstance(rng, numbers.Integral):
        return _random.Random(int(rng))
    if not all(hasattr(rng, name) for name in ('randint', 'randrange', 'random', 'uniform', 'shuffle')):
        raise TypeError(f'rng must be None, an int seed or a random.Random, got {type(rng).__name__}')
    return rng


def _to_pil(img):
    return img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img, np.uint8))


# ----------------------------------------------------------------------------------------------------------------
# Resizing

def resize_long_size(width, height, target_long):
    """Target (width, height) of RandomResizeLong: the long side becomes `target_long`, the other int(round()).

    Ties (square images) scale the width branch like the original (`w < h` is False).
    """
    if width < height:
        return int(round(width * target_long / height)), int(target_long)
    return int(target_long), int(round(height * target_long / width))


def random_resize_long(img, min_long=256, max_long=512, target_long=None, rng=None):
    """PSA RandomResizeLong: long side to L ~ randint(min_long, max_long) (inclusive), PIL BICUBIC.

    Args:
      img: PIL image (or uint8 HWC array).
      min_long, max_long: range of L.
      target_long: the draw L (skips the random draw).
      rng: see module docstring.
    Returns:
      PIL image.
    """
    img = _to_pil(img)
    if target_long is None:
        target_long = _as_random(rng).randint(min_long, max_long)
    return img.resize(resize_long_size(img.size[0], img.size[1], target_long), resample=Image.BICUBIC)


def msf_sizes(width, height, scales=PSA_MSF_SCALES, unit=1):
    """(width, height) per scale of VOC12ClsDatasetMSF: Python (banker's) round of the unit-rounded size times s."""
    rounded = (int(round(width / unit) * unit), int(round(height / unit) * unit))
    return [(round(rounded[0] * s), round(rounded[1] * s)) for s in scales]


def multiscale_flip_inputs(img, scales=PSA_MSF_SCALES, network='resnet38', unit=1):
    """Multi-scale + flip inference inputs (psa infer_cls: scales 1, 0.5, 1.5, 2; SEAM: 0.5, 1, 1.5, 2).

    Args:
      img: PIL image or uint8 HWC array (the original image).
      scales: scale list; use PSA_MSF_SCALES or SEAM_MSF_SCALES.
      network: 'resnet38' or 'vgg16' normalisation.
      unit: size rounding unit (1 in every script).
    Returns:
      list of 2*len(scales) float32 [h_s, w_s, 3] arrays: [scale0, flip(scale0), scale1, flip(scale1), ...].
    """
    img = _to_pil(img).convert('RGB')
    out = []
    for size in msf_sizes(img.size[0], img.size[1], scales, unit):
        scaled = normalize(np.asarray(img.resize(size, resample=Image.BICUBIC)), network)
        out.append(scaled)
        out.append(np.ascontiguousarray(scaled[:, ::-1]))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Flip and colour jitter

def random_horizontal_flip(img, flip=None, rng=None, draw='random'):
    """Horizontal flip with probability 0.5.

    Args:
      img: PIL image or HWC/HW array.
      flip: the draw (bool); None draws it.
      rng: see module docstring.
      draw: 'random' (torchvision RandomHorizontalFlip: random() < 0.5, used by train_cls on PIL images) or
        'getrandbits' (imutils.RandomHorizontalFlip: getrandbits(1), used by the joint aff transforms).
    Returns:
      same type as img.
    """
    if draw not in ('random', 'getrandbits'):
        raise ValueError(f"draw must be 'random' or 'getrandbits', got {draw!r}")
    if flip is None:
        r = _as_random(rng)
        flip = r.random() < 0.5 if draw == 'random' else bool(r.getrandbits(1))
    if not flip:
        return img
    if isinstance(img, Image.Image):
        return img.transpose(Image.FLIP_LEFT_RIGHT)
    return np.ascontiguousarray(np.asarray(img)[:, ::-1])


def adjust_brightness(img, factor):
    """torchvision adjust_brightness: PIL blend with black, out = clip(trunc(factor * x))."""
    return ImageEnhance.Brightness(_to_pil(img)).enhance(factor)


def adjust_contrast(img, factor):
    """torchvision adjust_contrast: PIL blend with the (rounded) mean of the 'L' image."""
    return ImageEnhance.Contrast(_to_pil(img)).enhance(factor)


def adjust_saturation(img, factor):
    """torchvision adjust_saturation: PIL blend with the 'L' (grey) version of the image."""
    return ImageEnhance.Color(_to_pil(img)).enhance(factor)


def adjust_hue(img, hue_factor):
    """torchvision 0.2 adjust_hue: PIL RGB->HSV, H += uint8(hue_factor*255) (truncated, wraps mod 256), ->RGB.

    The HSV round trip runs even for hue_factor 0, like the original.
    """
    if not -0.5 <= hue_factor <= 0.5:
        raise ValueError(f'hue_factor {hue_factor} is not in [-0.5, 0.5]')
    img = _to_pil(img)
    mode = img.mode
    if mode in ('L', '1', 'I', 'F'):
        return img
    h, s, v = img.convert('HSV').split()
    shift = int(hue_factor * 255) % 256  # int() truncates toward zero, as the uint8 cast of the original did
    np_h = ((np.asarray(h, np.int32) + shift) % 256).astype(np.uint8)
    return Image.merge('HSV', (Image.fromarray(np_h, 'L'), s, v)).convert(mode)


def color_jitter_params(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.1, rng=None):
    """Draws torchvision 0.2 ColorJitter parameters in the original's order.

    Returns:
      (factors, order): factors = dict name -> factor for the enabled ops; order = list of op names (shuffled).
    """
    r = _as_random(rng)
    factors, order = {}, []
    if brightness > 0:
        factors['brightness'] = r.uniform(max(0, 1 - brightness), 1 + brightness)
        order.append('brightness')
    if contrast > 0:
        factors['contrast'] = r.uniform(max(0, 1 - contrast), 1 + contrast)
        order.append('contrast')
    if saturation > 0:
        factors['saturation'] = r.uniform(max(0, 1 - saturation), 1 + saturation)
        order.append('saturation')
    if hue > 0:
        factors['hue'] = r.uniform(-hue, hue)
        order.append('hue')
    r.shuffle(order)
    return factors, order


_ADJUST = {'brightness': adjust_brightness, 'contrast': adjust_contrast, 'saturation': adjust_saturation,
           'hue': adjust_hue}


def color_jitter(img, brightness=0.3, contrast=0.3, saturation=0.3, hue=0.1, factors=None, order=None, rng=None):
    """torchvision 0.2 ColorJitter(b, c, s, h) on a PIL image: random factors applied in random order.

    Args:
      img: PIL RGB image (or uint8 HWC array).
      brightness, contrast, saturation, hue: jitter strengths (factor ranges [1-x, 1+x], hue [-h, h]).
      factors: dict name -> factor (skips the draws); `order` then defaults to b, c, s, h.
      order: list of op names to apply, in order.
      rng: see module docstring.
    Returns:
      PIL image.
    """
    img = _to_pil(img)
    if factors is None:
        factors, drawn_order = color_jitter_params(brightness, contrast, saturation, hue, rng)
        order = drawn_order if order is None else order
    if order is None:
        order = [k for k in ('brightness', 'contrast', 'saturation', 'hue') if k in factors]
    for name in order:
        img = _ADJUST[name](img, factors[name])
    return img


# ----------------------------------------------------------------------------------------------------------------
# Normalisation, crops, padding

def normalize(img, network='resnet38'):
    """ResNet-38 ImageNet normalisation or the VGG-16 Caffe BGR mean subtraction.

    Args:
      img: uint8/float HWC RGB array or PIL image.
      network: 'resnet38' ((x/255 - mean)/std, RGB) or 'vgg16' ([B-104.008, G-116.669, R-122.675], BGR order).
    Returns:
      float32 HWC.
    """
    x = np.asarray(img).astype(np.float32)
    if network == 'resnet38':
        return ((x / 255.0 - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)).astype(
            np.float32)
    if network == 'vgg16':
        return (x - np.asarray(VGG_MEAN_RGB, np.float32))[..., ::-1].astype(np.float32)
    raise ValueError(f'--network: unknown normalisation {network!r}; use one of {NETWORKS}')


def get_random_crop_box(imgsize, cropsize, rng=None):
    """The originals' crop box: (cont_top, cont_bottom, cont_left, cont_right, img_top, img_bottom, img_left,
    img_right). A side longer than cropsize is cropped at a random offset; a shorter one is placed at a random
    offset inside the container. Draws: randrange for width first, then height.

    Args:
      imgsize: (h, w).
      cropsize: container side.
    """
    r = _as_random(rng)
    h, w = imgsize
    ch, cw = min(cropsize, h), min(cropsize, w)
    w_space, h_space = w - cropsize, h - cropsize
    if w_space > 0:
        cont_left, img_left = 0, r.randrange(w_space + 1)
    else:
        cont_left, img_left = r.randrange(-w_space + 1), 0
    if h_space > 0:
        cont_top, img_top = 0, r.randrange(h_space + 1)
    else:
        cont_top, img_top = r.randrange(-h_space + 1), 0
    return cont_top, cont_top + ch, cont_left, cont_left + cw, img_top, img_top + ch, img_left, img_left + cw


def random_crop(imgarr, cropsize, fill=0.0, box=None, rng=None):
    """imutils.RandomCrop: float32 (cropsize, cropsize, C) container filled with `fill` (PSA 0, A2GNN 255).

    Args:
      imgarr: [H, W, C] array.
      cropsize: output side.
      fill: pad value.
      box: a `get_random_crop_box` tuple (skips the draws).
      rng: see module docstring.
    Returns:
      float32 [cropsize, cropsize, C].
    """
    imgarr = np.asarray(imgarr)
    if box is None:
        box = get_random_crop_box(imgarr.shape[:2], cropsize, rng)
    container = np.full((cropsize, cropsize, imgarr.shape[-1]), fill, np.float32)
    container[box[0]:box[1], box[2]:box[3]] = imgarr[box[4]:box[5], box[6]:box[7]]
    return container


def center_crop(npimg, cropsize, default_value=0):
    """imutils.CenterCrop: offsets int(round(delta/2)) (Python round) in the container or in the image.

    Returns:
      array [cropsize, cropsize(, C)] of npimg's dtype, padded with default_value.
    """
    npimg = np.asarray(npimg)
    h, w = npimg.shape[:2]
    ch, cw = min(cropsize, h), min(cropsize, w)
    sh, sw = h - cropsize, w - cropsize
    cont_left, img_left = (0, int(round(sw / 2))) if sw > 0 else (int(round(-sw / 2)), 0)
    cont_top, img_top = (0, int(round(sh / 2))) if sh > 0 else (int(round(-sh / 2)), 0)
    container = np.full((cropsize, cropsize) + npimg.shape[2:], default_value, npimg.dtype)
    container[cont_top:cont_top + ch, cont_left:cont_left + cw] = npimg[img_top:img_top + ch, img_left:img_left + cw]
    return container


def pad_to_multiple(img, multiple=8, value=0.0):
    """Pads right/bottom so H and W are multiples of `multiple` (infer_aff / A2GNN inference; labels: 255 or 0)."""
    img = np.asarray(img)
    h, w = img.shape[:2]
    ph, pw = (-h) % multiple, (-w) % multiple
    pad = [(0, ph), (0, pw)] + [(0, 0)] * (img.ndim - 2)
    return np.pad(img, pad, mode='constant', constant_values=value)


def avg_pool_labels(label, ksize=8):
    """imutils.AvgPool2d: skimage block_reduce(x, (k, k, 1), np.mean); partial blocks are zero-padded first.

    Args:
      label: [H, W, C] array (CRF probability stack).
    Returns:
      float [ceil(H/k), ceil(W/k), C].
    """
    x = np.asarray(label)
    h, w = x.shape[:2]
    x = np.pad(x, [(0, (-h) % ksize), (0, (-w) % ksize)] + [(0, 0)] * (x.ndim - 2))
    hb, wb = x.shape[0] // ksize, x.shape[1] // ksize
    return x.reshape((hb, ksize, wb, ksize) + x.shape[2:]).mean(axis=(1, 3))


def label_resize_nearest(label, size):
    """A2GNN LabelResize (cv2.resize INTER_NEAREST to (size, size)): samples src = floor(dst * in/out), i.e. the
    top-left pixel of each block, and drops a singleton channel like cv2 does.

    Args:
      label: [H, W] or [H, W, 1] array.
      size: output side.
    Returns:
      [size, size] array (or [size, size, C] for C > 1).
    """
    label = np.asarray(label)
    h, w = label.shape[:2]
    rows = np.minimum(np.floor(np.arange(size) * (h / size)).astype(np.int64), h - 1)
    cols = np.minimum(np.floor(np.arange(size) * (w / size)).astype(np.int64), w - 1)
    out = label[rows][:, cols]
    if out.ndim == 3 and out.shape[-1] == 1:
        out = out[..., 0]
    return out


# ----------------------------------------------------------------------------------------------------------------
# Whole per-script pipelines

def psa_cls_train_transform(img, crop_size=448, network='resnet38', min_long=256, max_long=512, rng=None,
                            target_long=None, flip=None, jitter_factors=None, jitter_order=None, box=None,
                            jitter=(0.3, 0.3, 0.3, 0.1)):
    """psa train_cls: RandomResizeLong -> hflip -> ColorJitter(0.3,0.3,0.3,0.1) -> normalise -> RandomCrop (0 pad).

    Args:
      img: PIL RGB image.
      crop_size: crop side (448).
      network: 'resnet38' or 'vgg16' normalisation.
      rng, target_long, flip, jitter_factors, jitter_order, box: draws (see the single transforms).
      jitter: ColorJitter (brightness, contrast, saturation, hue) strengths (the original's 0.3, 0.3, 0.3, 0.1).
    Returns:
      float32 [crop_size, crop_size, 3].
    """
    r = _as_random(rng)
    img = random_resize_long(img, min_long, max_long, target_long, r)
    img = random_horizontal_flip(img, flip, r)
    img = color_jitter(img, *jitter, factors=jitter_factors, order=jitter_order, rng=r)
    x = normalize(np.asarray(img), network)
    return random_crop(x, crop_size, 0.0, box, r)


def psa_cls_val_transform(img, network='resnet38', crop_size=500):
    """psa train_cls validation: normalise -> CenterCrop(500, pad 0)."""
    return center_crop(normalize(np.asarray(img), network), crop_size, 0.0)


def psa_aff_train_transform(img, crf_stack, crop_size=448, network='resnet38', rng=None, jitter_factors=None,
                            jitter_order=None, box=None, flip=None):
    """psa train_aff (VOC12AffDataset) stages: jitter -> joint crop of [uint8 img, CRF stack] with 0 fill BEFORE
    normalisation -> joint flip -> label AvgPool2d(8).

    Args:
      img: PIL RGB image.
      crf_stack: float [H, W, 2(k+1)] la then ha CRF probabilities.
    Returns:
      (image float32 [crop, crop, 3], pooled label float32 [crop/8, crop/8, 2(k+1)]).
    """
    r = _as_random(rng)
    img = np.asarray(color_jitter(img, factors=jitter_factors, order=jitter_order, rng=r))
    joint = np.concatenate([img.astype(np.float32), np.asarray(crf_stack, np.float32)], axis=-1)
    joint = random_crop(joint, crop_size, 0.0, box, r)
    image = normalize(joint[..., :3], network)
    label = joint[..., 3:]
    if flip is None:
        flip = bool(r.getrandbits(1))
    joint = random_horizontal_flip(np.concatenate([image, label], -1), flip)
    return joint[..., :3], avg_pool_labels(joint[..., 3:], 8).astype(np.float32)


def a2gnn_aff_train_transform(img, seed_label, crop_size=448, network='resnet38', rng=None, jitter_factors=None,
                              jitter_order=None, box=None, flip=None):
    """A2GNN train_gated_aff (VOC12AffGtDataset_NoExtract): seed 255 -> 254, jitter, joint crop filled with 255
    BEFORE normalisation (white image, 255 label), joint flip, LabelResize(crop/8) (top-left nearest), then
    croppings = (label != 255) and 254 -> 255.

    Returns:
      (image float32 [crop, crop, 3], label float32 [crop/8, crop/8], croppings float32 [crop/8, crop/8]).
    """
    r = _as_random(rng)
    label = np.asarray(seed_label, np.uint8).copy()
    if label.ndim == 2:
        label = label[..., None]
    label[label == 255] = 254
    img = np.asarray(color_jitter(img, factors=jitter_factors, order=jitter_order, rng=r))
    joint = np.concatenate([img.astype(np.float32), label.astype(np.float32)], axis=-1)
    joint = random_crop(joint, crop_size, 255.0, box, r)
    image = normalize(joint[..., :3], network)
    if flip is None:
        flip = bool(r.getrandbits(1))
    joint = random_horizontal_flip(np.concatenate([image, joint[..., 3:]], -1), flip)
    small = label_resize_nearest(joint[..., 3:], crop_size // 8).astype(np.float32)
    croppings = np.ones_like(small)
    croppings[small == 255] = 0
    small[small == 254] = 255
    return joint[..., :3], small, croppings


# ----------------------------------------------------------------------------------------------------------------
# tf.data for PSA classification training

def read_rgb(path):
    """The RGB PIL image of `path`, decoded now; a missing, unreadable or truncated file raises an error naming it.

    Raises:
      FileNotFoundError / ValueError naming the path (PIL's own messages do not).
    """
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'image not found: {path} (check --voc12_root and the list file)')
    try:
        with Image.open(path) as handle:
            return handle.convert('RGB')
    except OSError as error:
        raise ValueError(f'image {path} cannot be read: {error}') from error


def shard_and_number(ds, num_elements, input_context, shuffle, repeat, seed, layout_independent=False):
    """Shards `ds` per input pipeline, shuffles / repeats it and pairs each element with its running index.

    Args:
      layout_independent: number each element by (epoch, position in the list) instead of its running index in
        its shard, and leave the shard out of the base seed: every element gets the same stream whatever the
        number of input pipelines (workers), so N workers draw the samples one process draws.
    Returns:
      (dataset of (element, index), base_seed): the per-element Python draws use
      `base_seed * 2_147_483_647 + index`, so every shard and position gets its own reproducible stream.
    """
    import tensorflow as tf  # this module keeps TensorFlow out of its import, as its other dataset builders do

    shard_id, num_shards = 0, 1
    if input_context is not None:
        shard_id, num_shards = input_context.input_pipeline_id, max(1, input_context.num_input_pipelines)
    if layout_independent:
        ds = tf.data.Dataset.zip((ds, tf.data.Dataset.range(num_elements)))
    if num_shards > 1:
        ds = ds.shard(num_shards, shard_id)
    if shuffle:
        ds = ds.shuffle(num_elements, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = tf.data.Dataset.zip((ds, tf.data.Dataset.counter()))
    if not layout_independent:
        return ds, int(seed) * 1_000_003 + shard_id * 7_919
    shard_size = max(1, len(range(shard_id, num_elements, num_shards)))

    def number(element_and_position, running_index):
        element, position = element_and_position
        return element, running_index // shard_size * num_elements + position

    return ds.map(number), int(seed) * 1_000_003


def build_psa_cls_dataset(list_path, voc12_root, cls_labels, batch_size, crop_size=448, network='resnet38',
                          shuffle=True, seed=0, deterministic=True, input_context=None, repeat=False,
                          drop_remainder=True, min_long=256, max_long=512, training=True, with_names=False,
                          num_parallel_calls=None, jitter=(0.3, 0.3, 0.3, 0.1), layout_independent=False):
    """tf.data input of psa train_cls: (image float32 [crop, crop, 3], label float32 [20]) batches.

    Every element's augmentation draws come from `random.Random` seeded by (seed, shard, running element index), so
    the content is reproducible for a seed whatever the parallelism; `deterministic` additionally fixes the order.

    Args:
      list_path: PSA list (`/JPEGImages/<id>.jpg ...` lines; ids via `load_img_name_list`).
      voc12_root: VOC2012 directory (images at JPEGImages/<id>.jpg).
      cls_labels: dict id -> float32[20], or a path to `cls_labels.npy`.
      batch_size: GLOBAL batch size (divided per replica when `input_context` is given).
      crop_size: training crop side (448); the validation transform uses CenterCrop(crop_size) when training=False.
      network: 'resnet38' or 'vgg16' normalisation.
      shuffle: reshuffle the ids every epoch (seeded).
      seed: int seed of shuffling and augmentation.
      deterministic: tf.data deterministic ordering.
      input_context: tf.distribute.InputContext: shard by input pipeline and use the per-replica batch size.
      repeat: repeat forever.
      drop_remainder: drop the last partial batch (the original's drop_last).
      training: train transform (True) or validation transform.
      with_names: also yield the image id string.
      num_parallel_calls: map parallelism (default AUTOTUNE).
      jitter: ColorJitter strengths (brightness, contrast, saturation, hue) of the train transform.
      layout_independent: see `shard_and_number` (the same samples for any number of workers).
    Returns:
      tf.data.Dataset.
    """
    import tensorflow as tf

    from common.data.cls_labels import load_cls_labels
    from common.data.lists import check_listed_files, load_img_name_list
    from common.data.pipeline import input_options
    import os

    if network not in NETWORKS:
        raise ValueError(f'--network: unknown network {network!r}; use one of {NETWORKS}')
    names = load_img_name_list(list_path)
    labels = load_cls_labels(cls_labels) if isinstance(cls_labels, (str, os.PathLike)) else cls_labels
    missing = [n for n in names if n not in labels]
    if missing:
        raise KeyError(f'cls_labels has no label for {len(missing)} ids of {list_path}, e.g. {missing[:3]}')
    label_array = np.stack([np.asarray(labels[n], np.float32) for n in names])
    paths = [os.path.join(voc12_root, 'JPEGImages', n + '.jpg') for n in names]
    check_listed_files(paths, list_path)

    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    ds, base_seed = shard_and_number(tf.data.Dataset.from_tensor_slices((paths, label_array, names)), len(names),
                                     input_context, shuffle, repeat, seed, layout_independent)

    def load(path, element_index):
        img = read_rgb(path.decode() if isinstance(path, bytes) else str(path))
        if training:
            r = _random.Random(base_seed * 2_147_483_647 + int(element_index))
            out = psa_cls_train_transform(img, crop_size, network, min_long, max_long, rng=r, jitter=jitter)
        else:
            out = psa_cls_val_transform(img, network, crop_size)
        return out.astype(np.float32)

    def map_fn(element, element_index):
        path, label, name = element
        image = tf.numpy_function(load, [path, element_index], tf.float32, stateful=False)
        image.set_shape([crop_size, crop_size, 3])
        if with_names:
            return image, label, name
        return image, label

    ds = ds.map(map_fn, num_parallel_calls=num_parallel_calls or tf.data.AUTOTUNE, deterministic=deterministic)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.with_options(input_options(deterministic)).prefetch(tf.data.AUTOTUNE)
