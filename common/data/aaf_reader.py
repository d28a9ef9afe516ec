"""AAF / SegSort image readers: decoding and training augmentation (`seg_models/image_reader.py` of both originals).

Channels-last, one image at a time ([H, W, C] tensors), graph- and tf.data-friendly. The originals' augmentation
order is scale -> mirror -> crop/pad; every random draw can be injected:

* `scale`: float32 scalar (or [1]) scale factor s, new size = int(float32(H) * s) (U[0.5, 2.0) when drawn; the
  original docstring's 0.5-1.5 is wrong, quirk Q-A2);
* `mirror_draw`: float32 scalar (or [1]) u; the width axis is reversed iff u < 0.5;
* `crop_offset`: int32 (y, x) or (y, x, 0): the draw of `tf.random_crop`; the offset used is `draw % (padded -
  crop + 1)` as in TensorFlow (an in-range draw is the offset itself).

When a draw is None it is drawn from `seed` (a stateless seed, int32/int64 shape [2]; the readers split it into one
seed per step, so tf.data can run them in parallel and still be deterministic), else from `rng` (a
`tf.random.Generator`), else from TensorFlow's global stateful RNG (`tf.random.uniform`, like the original).
"""
import tensorflow as tf

from common.ops.resize import resize_bilinear_legacy, resize_nearest_legacy

# Mean colour of the training images, RGB order (the Caffe BGR mean reversed). No /255, no std.
IMG_MEAN = (122.675, 116.669, 104.008)

SCALE_RANGE = (0.5, 2.0)


def _uniform(shape, minval, maxval, dtype, seed=None, rng=None):
    """Uniform draw from a stateless seed, a Generator or the global RNG (in that order of preference)."""
    if seed is not None:
        return tf.random.stateless_uniform(shape, seed=seed, minval=minval, maxval=maxval, dtype=dtype)
    if rng is not None:
        return rng.uniform(shape, minval=minval, maxval=maxval, dtype=dtype)
    return tf.random.uniform(shape, minval=minval, maxval=maxval, dtype=dtype)


def _split_seed(seed, num):
    """`num` independent stateless seeds from one (None stays None)."""
    if seed is None:
        return [None] * num
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num)
    return [seeds[i] for i in range(num)]


def image_scaling(img, label, *, scale=None, seed=None, rng=None):
    """Randomly rescales an image and its label by one factor s ~ U[0.5, 2.0).

    Args:
      img: float32 [H, W, C] image.
      label: integer [H, W, L] label (any number of channels; all resized by nearest neighbour).
      scale: optional injected float32 scale (scalar or [1]).
      seed / rng: randomness source when `scale` is None (see the module docstring).

    Returns:
      (img, label): float32 [h, w, C] (TF1 legacy bilinear: align_corners=False, half_pixel_centers=False) and the
      label [h, w, L] in its dtype (legacy nearest neighbour, src = floor(dst * in / out)), with
      h = int(float32(H) * s), w = int(float32(W) * s).
    """
    if scale is None:
        scale = _uniform([1], SCALE_RANGE[0], SCALE_RANGE[1], tf.float32, seed, rng)
    scale = tf.reshape(tf.cast(scale, tf.float32), [])
    shape = tf.shape(img)
    new_h = tf.cast(tf.cast(shape[0], tf.float32) * scale, tf.int32)
    new_w = tf.cast(tf.cast(shape[1], tf.float32) * scale, tf.int32)
    new_shape = tf.stack([new_h, new_w])
    img = resize_bilinear_legacy(img[tf.newaxis], new_shape)[0]
    label = resize_nearest_legacy(label[tf.newaxis], new_shape)[0]
    return img, label


def image_mirroring(img, label, *, mirror_draw=None, seed=None, rng=None):
    """Randomly mirrors an image and its label left-right (probability 0.5).

    Args:
      img: [H, W, C] image; label: [H, W, L] label.
      mirror_draw: optional injected float32 u (scalar or [1]); the width axis is reversed iff u < 0.5.
      seed / rng: randomness source when `mirror_draw` is None.

    Returns:
      (img, label) with the same shapes and dtypes.
    """
    if mirror_draw is None:
        mirror_draw = _uniform([1], 0.0, 1.0, tf.float32, seed, rng)
    u = tf.reshape(tf.cast(mirror_draw, tf.float32), [])
    axes = tf.boolean_mask(tf.constant([0, 1, 2]), tf.stack([False, u < 0.5, False]))
    return tf.reverse(img, axes), tf.reverse(label, axes)


def crop_and_pad_image_and_labels(image, label, crop_h, crop_w, ignore_label=255, random_crop=True, *,
                                  crop_offset=None, seed=None, rng=None, label_dtype=tf.uint8):
    """Pads (bottom/right) to at least the crop size, then crops image and label together.

    The label is shifted by -ignore_label before the zero padding and back afterwards, so padded label pixels
    get `ignore_label` (in every label channel) and padded image pixels 0 (= the mean colour).

    Args:
      image: float32 [H, W, C]; label: integer [H, W, L].
      crop_h, crop_w: Python ints, output size.
      ignore_label: label value of padded pixels.
      random_crop: True (the original's default) -> uniform crop offsets; False -> centre crop at
        ((H' - crop_h) // 2, (W' - crop_w) // 2) of the padded size H' x W'.
      crop_offset: optional injected int32 draw (y, x) or (y, x, 0) for the random crop.
      seed / rng: randomness source when random_crop and crop_offset is None.
      label_dtype: output label dtype: tf.uint8 (AAF) or tf.int32 (SegSort readers).

    Returns:
      (image [crop_h, crop_w, C] float32, label [crop_h, crop_w, L] label_dtype), static shapes set.
    """
    label = tf.cast(label, tf.float32) - ignore_label
    combined = tf.concat([tf.cast(image, tf.float32), label], axis=2)
    shape = tf.shape(image)
    padded_h = tf.maximum(crop_h, shape[0])
    padded_w = tf.maximum(crop_w, shape[1])
    combined = tf.image.pad_to_bounding_box(combined, 0, 0, padded_h, padded_w)
    if random_crop:
        limit = tf.stack([padded_h - crop_h + 1, padded_w - crop_w + 1])
        if crop_offset is None:
            crop_offset = _uniform([2], 0, tf.int32.max, tf.int32, seed, rng)
        draw = tf.cast(tf.reshape(crop_offset, [-1])[:2], tf.int32)
        offset = draw % limit
        combined = tf.slice(combined, tf.stack([offset[0], offset[1], 0]), tf.stack([crop_h, crop_w, -1]))
    else:
        combined = tf.image.resize_with_crop_or_pad(combined, crop_h, crop_w)
    image_channels = image.shape[-1] if image.shape[-1] is not None else 3
    label_channels = label.shape[-1] if label.shape[-1] is not None else 1
    img_crop = combined[:, :, :image_channels]
    label_crop = tf.cast(combined[:, :, image_channels:] + ignore_label, label_dtype)
    img_crop.set_shape((crop_h, crop_w, image_channels))
    label_crop.set_shape((crop_h, crop_w, label_channels))
    return img_crop, label_crop


def decode_image(contents, img_mean=IMG_MEAN):
    """Decodes image bytes (JPEG/PNG/BMP/GIF, format sniffed) to mean-subtracted float32 RGB [H, W, 3]."""
    img = tf.io.decode_image(contents, channels=3, expand_animations=False)
    img.set_shape([None, None, 3])
    return tf.cast(img, tf.float32) - tf.constant(img_mean, tf.float32)


def decode_label(contents):
    """Decodes label PNG bytes to uint8 [H, W, 1] (grayscale: a palette PNG gives luminance, as the original)."""
    label = tf.io.decode_png(contents, channels=1)
    label.set_shape([None, None, 1])
    return label


def augment(img, label, input_size, random_scale, random_mirror, random_crop, ignore_label, *, scale=None,
            mirror_draw=None, crop_offset=None, seed=None, rng=None, label_dtype=tf.uint8):
    """The originals' training augmentation on decoded tensors: scale -> mirror -> crop/pad.

    Nothing happens when `input_size` is None (inference readers). Arguments as in `read_images_from_disk`.

    Returns:
      (img float32 [h, w, 3], label [h, w, L]); after crop/pad the label has `label_dtype`.
    """
    if input_size is None:
        return img, label
    crop_h, crop_w = (int(v) for v in input_size)
    scale_seed, mirror_seed, crop_seed = _split_seed(seed, 3)
    if random_scale:
        img, label = image_scaling(img, label, scale=scale, seed=scale_seed, rng=rng)
    if random_mirror:
        img, label = image_mirroring(img, label, mirror_draw=mirror_draw, seed=mirror_seed, rng=rng)
    return crop_and_pad_image_and_labels(img, label, crop_h, crop_w, ignore_label, random_crop,
                                         crop_offset=crop_offset, seed=crop_seed, rng=rng,
                                         label_dtype=label_dtype)


def _read_paths(input_queue, count):
    paths = [input_queue[i] for i in range(count)]
    return [tf.io.read_file(p) for p in paths]


def read_images_from_disk(input_queue, input_size, random_scale, random_mirror, random_crop, ignore_label,
                          img_mean, *, scale=None, mirror_draw=None, crop_offset=None, seed=None, rng=None):
    """AAF reader: reads, decodes and (when input_size is given) augments one image and its label.

    Args:
      input_queue: (image_path, label_path): str or scalar string tensors.
      input_size: (crop_h, crop_w) or None (no augmentation: whole image, label uint8 as decoded).
      random_scale, random_mirror, random_crop: enable the augmentation steps.
      ignore_label: pad value of labels (255).
      img_mean: RGB mean subtracted from the image (IMG_MEAN).
      scale, mirror_draw, crop_offset, seed, rng: injected draws / randomness source (module docstring).

    Returns:
      (img float32 [h, w, 3], label uint8 [h, w, 1]).
    """
    img_contents, label_contents = _read_paths(input_queue, 2)
    img = decode_image(img_contents, img_mean)
    label = decode_label(label_contents)
    return augment(img, label, input_size, random_scale, random_mirror, random_crop, ignore_label, scale=scale,
                   mirror_draw=mirror_draw, crop_offset=crop_offset, seed=seed, rng=rng, label_dtype=tf.uint8)


def segsort_from_decoded(img, label, input_size, random_scale, random_mirror, random_crop, ignore_label,
                         num_clusters=None, **draws):
    """SegSort training transform of a decoded image/label (see `read_images_from_disk_for_segsort`)."""
    from segsort.clustering import generate_location_features, initialize_cluster_labels

    height = tf.shape(img)[0]
    width = tf.shape(img)[1]
    if num_clusters is None:
        num_clusters = [5, 5]
    cluster_label = initialize_cluster_labels(num_clusters, [height, width])[:, :, tf.newaxis]
    locations = generate_location_features([height, width], feature_type='int')
    combined = tf.concat([tf.cast(label, tf.int32), cluster_label, locations], axis=2)
    combined.set_shape([None, None, 4])
    img, combined = augment(img, combined, input_size, random_scale, random_mirror, random_crop, ignore_label,
                            label_dtype=tf.int32, **draws)
    semantic_label = combined[:, :, 0:1]
    cluster_label = combined[:, :, 1:2]
    yx = tf.cast(combined[:, :, 2:4], tf.float32)
    loc_feature = tf.concat([yx[:, :, 0:1] / tf.cast(height, tf.float32),
                             yx[:, :, 1:2] / tf.cast(width, tf.float32)], axis=2)
    return img, semantic_label, cluster_label, loc_feature, height, width


def read_images_from_disk_for_segsort(input_queue, input_size, random_scale, random_mirror, random_crop,
                                      ignore_label, img_mean, num_clusters=None, *, scale=None, mirror_draw=None,
                                      crop_offset=None, seed=None, rng=None):
    """SegSort reader: image, semantic label, initial cluster grid and location features.

    The cluster grid (`initialize_cluster_labels(num_clusters or [5, 5], [H, W])`) and integer (y, x) locations
    are built on the ORIGINAL image and augmented with the label as extra channels (nearest scaling, mirroring,
    crop/pad with `ignore_label` in every channel), then locations are divided by the ORIGINAL H and W (padded
    pixels get ignore_label / H, ignore_label / W; quirk Q-S3).

    Args: as `read_images_from_disk`, plus num_clusters ([ky, kx] or int; None = [5, 5]).

    Returns:
      (img float32 [h, w, 3], semantic_label int32 [h, w, 1], cluster_label int32 [h, w, 1],
       loc_feature float32 [h, w, 2] (y, x), height int32 scalar, width int32 scalar), height/width of the
      original image.
    """
    img_contents, label_contents = _read_paths(input_queue, 2)
    img = decode_image(img_contents, img_mean)
    label = decode_label(label_contents)
    return segsort_from_decoded(img, label, input_size, random_scale, random_mirror, random_crop, ignore_label,
                                num_clusters, scale=scale, mirror_draw=mirror_draw, crop_offset=crop_offset,
                                seed=seed, rng=rng)


def unsup_segsort_from_decoded(img, label, cluster_label, input_size, random_scale, random_mirror, random_crop,
                               ignore_label, **draws):
    """Unsupervised SegSort transform of decoded tensors (see `read_images_from_disk_for_unsup_segsort`)."""
    combined = tf.concat([label, tf.cast(cluster_label, label.dtype)], axis=2)
    combined.set_shape([None, None, 2])
    img, combined = augment(img, combined, input_size, random_scale, random_mirror, random_crop, ignore_label,
                            label_dtype=tf.int32, **draws)
    return img, combined[:, :, 0:1], combined[:, :, 1:2]


def read_images_from_disk_for_unsup_segsort(input_queue, input_size, random_scale, random_mirror, random_crop,
                                            ignore_label, img_mean, *, scale=None, mirror_draw=None,
                                            crop_offset=None, seed=None, rng=None):
    """Unsupervised SegSort reader: image, semantic label (unused by the loss) and HED over-segmentation.

    Args:
      input_queue: (image_path, label_path, hed_path).
      Others as `read_images_from_disk`.

    Returns:
      (img float32 [h, w, 3], label [h, w, 1], cluster_label [h, w, 1]); the labels are int32 after crop/pad
      (input_size given) and uint8 as decoded otherwise, as in the original.
    """
    img_contents, label_contents, hed_contents = _read_paths(input_queue, 3)
    img = decode_image(img_contents, img_mean)
    label = decode_label(label_contents)
    hed = decode_label(hed_contents)
    return unsup_segsort_from_decoded(img, label, hed, input_size, random_scale, random_mirror, random_crop,
                                      ignore_label, scale=scale, mirror_draw=mirror_draw, crop_offset=crop_offset,
                                      seed=seed, rng=rng)


def shrink_labels(labels, out_hw=None):
    """Shrinks labels to the logits' resolution with TF1 legacy nearest neighbour (no half-pixel centres).

    Args:
      labels: integer or float [N, H, W, L] or [H, W, L].
      out_hw: (h, w); None = (ceil(H / 8), ceil(W / 8)) (336 -> 42 picks rows/cols 0, 8, 16, ...).

    Returns:
      labels resized to [N, h, w, L] (or [h, w, L]) in their dtype.
    """
    labels = tf.convert_to_tensor(labels)
    batched = labels.shape.rank == 4
    if not batched:
        labels = labels[tf.newaxis]
    if out_hw is None:
        shape = tf.shape(labels)
        out_hw = tf.stack([(shape[1] + 7) // 8, (shape[2] + 7) // 8])
    out = resize_nearest_legacy(labels, tf.cast(out_hw, tf.int32))
    return out if batched else out[0]
