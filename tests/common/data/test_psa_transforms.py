"""PSA / A2GNN transforms against independent NumPy references for fixed draws, and the PSA cls tf.data input."""
import colorsys
import random

import cv2
import numpy as np
import pytest
from PIL import Image

from common.data import psa_transforms as T


def _image(h=23, w=31, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------------------------
# resize

def test_resize_long_sizes_use_python_round_and_the_width_branch_on_ties():
    assert T.resize_long_size(500, 375, 300) == (300, 225)
    assert T.resize_long_size(375, 500, 256) == (192, 256)
    assert T.resize_long_size(1, 2, 5) == (2, 5)  # 2.5 -> 2 (banker's rounding)
    assert T.resize_long_size(3, 2, 5) == (5, 3)  # 3.333 -> 3
    assert T.resize_long_size(40, 40, 300) == (300, 300)


def test_random_resize_long_draws_randint_inclusive_like_the_original():
    img = Image.fromarray(_image(30, 20))
    for seed in range(5):
        expected_long = random.Random(seed).randint(256, 512)
        out = T.random_resize_long(img, 256, 512, rng=random.Random(seed))
        assert out.size == T.resize_long_size(20, 30, expected_long) and max(out.size) == expected_long
    assert T.random_resize_long(img, target_long=60).size == (40, 60)
    assert {T.random_resize_long(img, 5, 6, rng=random.Random(s)).size[1] for s in range(30)} == {5, 6}
    assert T.random_resize_long(img, rng=7).size == T.random_resize_long(img, rng=random.Random(7)).size
    with pytest.raises(TypeError, match='rng'):
        T.random_resize_long(img, rng=np.random.default_rng(0))


def _keys_cubic(x, a=-0.5):
    x = np.abs(x)
    return np.where(x < 1, (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1,
                    np.where(x < 2, a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a, 0.0))


def _bicubic_upsample_reference(arr, out_h, out_w):
    """Keys (a=-0.5) cubic convolution with pixel-centre alignment and window renormalisation at the borders."""
    def matrix(n_in, n_out):
        scale = n_in / n_out
        m = np.zeros((n_out, n_in))
        for i in range(n_out):
            centre = (i + 0.5) * scale
            lo, hi = max(0, int(centre - 2 + 0.5)), min(n_in, int(centre + 2 + 0.5))
            taps = np.arange(lo, hi)
            weights = _keys_cubic(taps + 0.5 - centre)
            m[i, taps] = weights / weights.sum()
        return m
    rows, cols = matrix(arr.shape[0], out_h), matrix(arr.shape[1], out_w)
    # horizontal pass first, stored as 8-bit like PIL's intermediate image, then the vertical pass
    horizontal = np.clip(np.round(np.einsum('jkc,lk->jlc', arr.astype(np.float64), cols)), 0, 255)
    return np.clip(np.einsum('ij,jlc->ilc', rows, horizontal), 0, 255)


def test_bicubic_resize_matches_a_cubic_convolution_reference():
    arr = _image(9, 12, seed=3)
    out = np.asarray(T.random_resize_long(Image.fromarray(arr), target_long=30), np.float64)
    assert out.shape == (22, 30, 3)
    ref = _bicubic_upsample_reference(arr, 22, 30)
    assert np.abs(out - ref).max() <= 1.5 and np.abs(out - ref).mean() < 0.3  # PIL: fixed-point weights
    bilinear = np.asarray(Image.fromarray(arr).resize((30, 22), Image.BILINEAR), np.float64)
    assert np.abs(bilinear - ref).mean() > 2 * np.abs(out - ref).mean()  # the reference tells the filters apart


def test_msf_sizes_and_inputs_for_psa_and_seam_scales():
    assert T.msf_sizes(301, 213, T.PSA_MSF_SCALES) == [(301, 213), (150, 106), (452, 320), (602, 426)]
    assert T.msf_sizes(301, 213, T.SEAM_MSF_SCALES)[0] == (150, 106)
    img = _image(13, 17)
    inputs = T.multiscale_flip_inputs(img, T.PSA_MSF_SCALES, 'resnet38')
    assert len(inputs) == 8
    for k, (w, h) in enumerate(T.msf_sizes(17, 13)):
        assert inputs[2 * k].shape == (h, w, 3) and inputs[2 * k].dtype == np.float32
        np.testing.assert_array_equal(inputs[2 * k + 1], inputs[2 * k][:, ::-1])
    np.testing.assert_allclose(inputs[0], T.normalize(img, 'resnet38'), rtol=0, atol=0)
    seam = T.multiscale_flip_inputs(img, T.SEAM_MSF_SCALES, 'vgg16')
    np.testing.assert_array_equal(seam[2], T.normalize(img, 'vgg16'))


# ---------------------------------------------------------------------------------------------------------------
# flip and colour jitter

def test_horizontal_flip_is_an_involution_and_follows_its_draw():
    arr = _image()
    flipped = T.random_horizontal_flip(arr, flip=True)
    np.testing.assert_array_equal(flipped[:, 0], arr[:, -1])
    np.testing.assert_array_equal(T.random_horizontal_flip(flipped, flip=True), arr)
    assert T.random_horizontal_flip(arr, flip=False) is arr
    np.testing.assert_array_equal(np.asarray(T.random_horizontal_flip(Image.fromarray(arr), flip=True)), flipped)
    for seed in range(6):
        expect = random.Random(seed).random() < 0.5
        out = T.random_horizontal_flip(arr, rng=random.Random(seed))
        assert np.array_equal(out, flipped) == expect
        expect_bits = bool(random.Random(seed).getrandbits(1))
        out = T.random_horizontal_flip(arr, rng=random.Random(seed), draw='getrandbits')
        assert np.array_equal(out, flipped) == expect_bits


def _pil_blend_reference(degenerate, img, factor):
    """PIL ImagingBlend: float32 in1 + alpha*(in2-in1), truncated to uint8 (clipped when extrapolating)."""
    value = degenerate.astype(np.float32) + np.float32(factor) * (img.astype(np.float32) - degenerate)
    return np.clip(np.trunc(value), 0, 255).astype(np.uint8)


def _luma(img):
    """PIL RGB->L: (299 R + 587 G + 114 B)/1000 in 16-bit fixed point with rounding."""
    r, g, b = (img[..., k].astype(np.int64) for k in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


def _assert_blend_equal(actual, expected):
    # exact here; a compiler contracting PIL's float multiply-add may move a value sitting on an integer by one
    diff = np.abs(np.asarray(actual, np.int32) - expected)
    assert diff.max() <= 1 and np.mean(diff == 0) > 0.99


@pytest.mark.parametrize('factor', [0.7, 0.93, 1.0, 1.27])
def test_brightness_contrast_saturation_follow_the_blend_formulas(factor):
    arr = _image(17, 19, seed=1)
    pil = Image.fromarray(arr)
    _assert_blend_equal(T.adjust_brightness(pil, factor), _pil_blend_reference(np.zeros_like(arr), arr, factor))
    mean = int(_luma(arr).mean() + 0.5)
    _assert_blend_equal(T.adjust_contrast(pil, factor), _pil_blend_reference(np.full_like(arr, mean), arr, factor))
    grey = np.repeat(_luma(arr)[..., None], 3, -1)
    _assert_blend_equal(T.adjust_saturation(pil, factor), _pil_blend_reference(grey, arr, factor))
    # truncation, not rounding: a formula with np.round would disagree on many pixels
    rounded = np.clip(np.round(np.float32(factor) * arr.astype(np.float32)), 0, 255)
    if factor not in (1.0,):
        assert np.mean(np.asarray(T.adjust_brightness(pil, factor)) != rounded) > 0.2
    if factor == 1.0:  # zero jitter is the identity
        for fn in (T.adjust_brightness, T.adjust_contrast, T.adjust_saturation):
            np.testing.assert_array_equal(np.asarray(fn(pil, 1.0)), arr)


def test_hue_shift_truncates_toward_zero_and_wraps():
    red = Image.fromarray(np.full((2, 2, 3), (255, 0, 0), np.uint8))
    for factor in (1 / 3, -1 / 3, -0.1, 0.1, 0.0):
        shift = int(factor * 255) % 256  # -25.5 -> -25 -> 231 (floor would give 230)
        expected = np.array(colorsys.hsv_to_rgb(shift / 255.0, 1.0, 1.0)) * 255
        got = np.asarray(T.adjust_hue(red, factor))[0, 0].astype(np.float64)
        assert np.abs(got - expected).max() <= 2.0, (factor, got, expected)
    np.testing.assert_array_equal(np.asarray(T.adjust_hue(red, 1 / 3))[0, 0], [0, 255, 0])
    with pytest.raises(ValueError, match='hue_factor'):
        T.adjust_hue(red, 0.7)


def test_color_jitter_draws_like_torchvision_and_applies_ops_in_the_drawn_order():
    rng = random.Random(4)
    factors, order = T.color_jitter_params(0.3, 0.3, 0.3, 0.1, rng=random.Random(4))
    expected = {'brightness': rng.uniform(0.7, 1.3), 'contrast': rng.uniform(0.7, 1.3),
                'saturation': rng.uniform(0.7, 1.3), 'hue': rng.uniform(-0.1, 0.1)}
    expected_order = ['brightness', 'contrast', 'saturation', 'hue']
    rng.shuffle(expected_order)
    assert factors == expected and order == expected_order
    pil = Image.fromarray(_image(15, 15, seed=2))
    manual = pil
    for name in order:
        manual = {'brightness': T.adjust_brightness, 'contrast': T.adjust_contrast,
                  'saturation': T.adjust_saturation, 'hue': T.adjust_hue}[name](manual, factors[name])
    np.testing.assert_array_equal(np.asarray(T.color_jitter(pil, rng=random.Random(4))), np.asarray(manual))
    fixed = {'brightness': 1.3, 'contrast': 0.7}
    a = np.asarray(T.color_jitter(pil, factors=fixed, order=['brightness', 'contrast']))
    b = np.asarray(T.color_jitter(pil, factors=fixed, order=['contrast', 'brightness']))
    assert not np.array_equal(a, b)  # order matters, so it must be drawn
    identity = {'brightness': 1.0, 'contrast': 1.0, 'saturation': 1.0}
    np.testing.assert_array_equal(np.asarray(T.color_jitter(pil, factors=identity)), np.asarray(pil))


# ---------------------------------------------------------------------------------------------------------------
# normalisation, crops, pooling

def test_normalisations():
    arr = _image(3, 4)
    x = arr.astype(np.float64)
    ref = (x / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(T.normalize(arr, 'resnet38'), ref, rtol=1e-6, atol=1e-6)
    vgg = T.normalize(arr, 'vgg16')
    assert vgg.dtype == np.float32
    np.testing.assert_allclose(vgg[..., 0], x[..., 2] - 104.008, atol=1e-4)
    np.testing.assert_allclose(vgg[..., 2], x[..., 0] - 122.675, atol=1e-4)
    with pytest.raises(ValueError, match='--network'):
        T.normalize(arr, 'resnet101')


def _crop_reference(arr, cropsize, fill, draws):
    """Independent loop implementation of imutils.RandomCrop given its two randrange draws (width, height)."""
    h, w = arr.shape[:2]
    out = np.full((cropsize, cropsize, arr.shape[2]), fill, np.float32)
    dx, dy = draws
    for y in range(cropsize):
        for x in range(cropsize):
            sy = y + dy if h > cropsize else y - dy
            sx = x + dx if w > cropsize else x - dx
            if 0 <= sy < h and 0 <= sx < w and (h > cropsize or 0 <= y - dy) and (w > cropsize or 0 <= x - dx):
                out[y, x] = arr[sy, sx]
    return out


@pytest.mark.parametrize('shape', [(11, 14), (5, 14), (11, 6), (4, 5)])
@pytest.mark.parametrize('fill', [0.0, 255.0])
def test_random_crop_box_draws_and_pad_values(shape, fill):
    arr = _image(*shape, seed=5).astype(np.float32)
    cropsize = 8
    for seed in range(3):
        r = random.Random(seed)
        dx = r.randrange(abs(shape[1] - cropsize) + 1)
        dy = r.randrange(abs(shape[0] - cropsize) + 1)
        out = T.random_crop(arr, cropsize, fill, rng=random.Random(seed))
        assert out.shape == (cropsize, cropsize, 3) and out.dtype == np.float32
        np.testing.assert_array_equal(out, _crop_reference(arr, cropsize, fill, (dx, dy)))
        box = T.get_random_crop_box(shape, cropsize, random.Random(seed))
        np.testing.assert_array_equal(T.random_crop(arr, cropsize, fill, box=box), out)
    if shape == (4, 5):  # the whole image sits inside the container; every other pixel is the fill value
        box = T.get_random_crop_box(shape, cropsize, random.Random(0))
        out = T.random_crop(arr, cropsize, fill, box=box)
        np.testing.assert_array_equal(out[box[0]:box[1], box[2]:box[3]], arr)
        outside = np.ones((cropsize, cropsize), bool)
        outside[box[0]:box[1], box[2]:box[3]] = False
        assert (out[outside] == fill).all() and outside.sum() == cropsize * cropsize - 20


def test_center_crop_offsets_use_python_round():
    arr = np.arange(9 * 11, dtype=np.float32).reshape(9, 11)
    out = T.center_crop(arr, 6, default_value=-1)
    # sh = 3 -> round(1.5) = 2; sw = 5 -> round(2.5) = 2
    np.testing.assert_array_equal(out, arr[2:8, 2:8])
    small = T.center_crop(np.ones((3, 5, 2), np.float32), 8, default_value=0)
    # -sh = 5 -> round(2.5) = 2 rows on top; -sw = 3 -> round(1.5) = 2 columns on the left
    assert small.shape == (8, 8, 2)
    np.testing.assert_array_equal(np.nonzero(small[..., 0].any(1))[0], [2, 3, 4])
    np.testing.assert_array_equal(np.nonzero(small[..., 0].any(0))[0], [2, 3, 4, 5, 6])


def test_avg_pool_labels_is_the_block_mean_with_zero_padded_partial_blocks():
    x = np.random.default_rng(0).random((16, 24, 3)).astype(np.float32)
    pooled = T.avg_pool_labels(x, 8)
    assert pooled.shape == (2, 3, 3)
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(pooled[i, j], x[8 * i:8 * i + 8, 8 * j:8 * j + 8].mean((0, 1)), rtol=1e-6)
    odd = T.avg_pool_labels(np.ones((10, 8, 1)), 8)
    np.testing.assert_allclose(odd[:, 0, 0], [1.0, 2 / 8])


@pytest.mark.parametrize('size_in,size_out', [(448, 56), (40, 5), (37, 10), (9, 4)])
def test_label_resize_matches_cv2_nearest(size_in, size_out):
    label = np.random.default_rng(1).integers(0, 256, (size_in, size_in, 1), dtype=np.uint8)
    ours = T.label_resize_nearest(label, size_out)
    ref = cv2.resize(label, (size_out, size_out), interpolation=cv2.INTER_NEAREST)
    assert ours.shape == ref.shape == (size_out, size_out)
    np.testing.assert_array_equal(ours, ref)
    if size_in % size_out == 0:
        k = size_in // size_out
        np.testing.assert_array_equal(ours, label[::k, ::k, 0])  # top-left of each block


def test_pad_to_multiple_pads_right_and_bottom():
    x = np.ones((9, 16, 2), np.float32)
    out = T.pad_to_multiple(x, 8, value=255)
    assert out.shape == (16, 16, 2)
    assert (out[:9] == 1).all() and (out[9:] == 255).all()
    assert T.pad_to_multiple(np.zeros((8, 8)), 8).shape == (8, 8)


# ---------------------------------------------------------------------------------------------------------------
# whole script pipelines

IDENTITY_JITTER = {'brightness': 1.0, 'contrast': 1.0, 'saturation': 1.0}


def test_train_cls_pads_zero_after_normalisation():
    img = Image.fromarray(_image(20, 30, seed=7))
    out = T.psa_cls_train_transform(img, crop_size=48, target_long=40, flip=False,
                                     jitter_factors=IDENTITY_JITTER, box=(0, 27, 0, 40, 0, 27, 0, 40))
    resized = T.normalize(np.asarray(img.resize((40, 27), Image.BICUBIC)), 'resnet38')
    np.testing.assert_array_equal(out[:27, :40], resized)
    assert (out[27:] == 0).all() and (out[:, 40:] == 0).all()
    # with an rng, the draws are resize -> flip -> jitter -> crop, in that order
    a = T.psa_cls_train_transform(img, crop_size=32, rng=random.Random(3), min_long=30, max_long=50)
    b = T.psa_cls_train_transform(img, crop_size=32, rng=random.Random(3), min_long=30, max_long=50)
    np.testing.assert_array_equal(a, b)
    val = T.psa_cls_val_transform(np.asarray(img), 'vgg16', crop_size=24)
    np.testing.assert_array_equal(val, T.center_crop(T.normalize(np.asarray(img), 'vgg16'), 24, 0))


def test_train_aff_pads_before_normalisation_and_pools_labels():
    img = Image.fromarray(_image(12, 12, seed=8))
    crf = np.random.default_rng(0).random((12, 12, 4)).astype(np.float32)
    box = T.get_random_crop_box((12, 12), 16, random.Random(0))
    image, label = T.psa_aff_train_transform(img, crf, crop_size=16, jitter_factors=IDENTITY_JITTER, box=box,
                                             flip=False)
    black = T.normalize(np.zeros((1, 1, 3), np.uint8))[0, 0]
    pad = np.ones((16, 16), bool)
    pad[box[0]:box[1], box[2]:box[3]] = False
    np.testing.assert_allclose(image[pad], np.broadcast_to(black, (pad.sum(), 3)))
    container = np.zeros((16, 16, 4), np.float32)
    container[box[0]:box[1], box[2]:box[3]] = crf
    np.testing.assert_allclose(label, T.avg_pool_labels(container, 8), rtol=1e-6)
    _, flipped = T.psa_aff_train_transform(img, crf, crop_size=16, jitter_factors=IDENTITY_JITTER, box=box, flip=True)
    np.testing.assert_allclose(flipped, T.avg_pool_labels(container[:, ::-1], 8), rtol=1e-6)


def test_a2gnn_aff_pads_white_and_255_and_marks_croppings():
    img = Image.fromarray(_image(16, 16, seed=9))
    seed_label = np.zeros((16, 16), np.uint8)
    seed_label[:8] = 255  # unlabelled seeds stay 255 but are NOT crop padding
    seed_label[8:, 8:] = 3
    box = (0, 16, 8, 24, 0, 16, 0, 16)  # image placed 8 px right in a 24 x 24 container
    image, label, croppings = T.a2gnn_aff_train_transform(img, seed_label, crop_size=24,
                                                          jitter_factors=IDENTITY_JITTER, box=box, flip=False)
    white = T.normalize(np.full((1, 1, 3), 255, np.uint8))[0, 0]
    np.testing.assert_allclose(image[:, :8].reshape(-1, 3), np.broadcast_to(white, (24 * 8, 3)))
    assert label.shape == croppings.shape == (3, 3)
    # top-left sampling at rows/cols 0, 8, 16 of the container
    np.testing.assert_array_equal(label, [[255, 255, 255], [255, 0, 3], [255, 255, 255]])
    np.testing.assert_array_equal(croppings, [[0, 1, 1], [0, 1, 1], [0, 0, 0]])


# ---------------------------------------------------------------------------------------------------------------
# tf.data

@pytest.fixture(scope='module')
def tiny_voc(tmp_path_factory):
    from common.data import synthetic
    out = tmp_path_factory.mktemp('psa_voc')
    return synthetic.generate('voc', str(out), 6, seed=1, height=36, width=44)


def _collect(ds):
    return [tuple(np.asarray(t) for t in batch) for batch in ds]


def test_psa_cls_dataset_yields_labels_and_is_reproducible(tiny_voc):
    import tensorflow as tf
    from common.data.cls_labels import load_cls_labels
    lists = tiny_voc['lists']['psa']
    kwargs = dict(list_path=lists['train_aug'], voc12_root=tiny_voc['voc12_root'], cls_labels=tiny_voc['cls_labels'],
                  batch_size=2, crop_size=32, min_long=30, max_long=50, with_names=True)
    first = _collect(T.build_psa_cls_dataset(seed=3, **kwargs))
    again = _collect(T.build_psa_cls_dataset(seed=3, **kwargs))
    other = _collect(T.build_psa_cls_dataset(seed=4, **kwargs))
    assert len(first) == 2  # 5 train_aug ids, batch 2, drop_remainder
    labels = load_cls_labels(tiny_voc['cls_labels'])
    for (img, lab, names), (img2, _, names2) in zip(first, again):
        assert img.shape == (2, 32, 32, 3) and img.dtype == np.float32 and lab.shape == (2, 20)
        np.testing.assert_array_equal(img, img2)
        assert list(names) == list(names2)
        for name, row in zip(names, lab):
            np.testing.assert_array_equal(row, labels[name.decode()])
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other))
    # no autotuning model: its thread delayed the end of every training run by up to a minute
    assert T.build_psa_cls_dataset(seed=3, **kwargs).options().autotune.enabled is False
    # parallel loading (the default) gives the batches of serial loading
    serial = _collect(T.build_psa_cls_dataset(seed=3, num_parallel_calls=1, **kwargs))
    for (img, _, names), (img2, _, names2) in zip(first, serial):
        np.testing.assert_array_equal(img, img2)
        assert list(names) == list(names2)
    # validation transform = CenterCrop of the normalised image, no randomness
    val = _collect(T.build_psa_cls_dataset(list_path=lists['val'], voc12_root=tiny_voc['voc12_root'],
                                           cls_labels=tiny_voc['cls_labels'], batch_size=1, crop_size=40,
                                           training=False, shuffle=False, with_names=True))
    name = val[0][2][0].decode()
    with Image.open(f"{tiny_voc['voc12_root']}/JPEGImages/{name}.jpg") as im:
        expected = T.psa_cls_val_transform(np.asarray(im.convert('RGB')), 'resnet38', 40)
    np.testing.assert_allclose(val[0][0][0], expected, rtol=1e-6)
    # per-replica sharding: per-replica batch and disjoint shards covering every id
    seen = []
    for pipeline in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline, num_replicas_in_sync=2)
        batches = _collect(T.build_psa_cls_dataset(input_context=ctx, drop_remainder=False,
                                                   **dict(kwargs, seed=0)))
        assert all(b[0].shape[0] == 1 for b in batches)
        seen.append({n.decode() for b in batches for n in b[2]})
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(labels) - set(_list_ids(lists['val']))
    with pytest.raises(KeyError, match='no label'):
        T.build_psa_cls_dataset(list_path=lists['train_aug'], voc12_root=tiny_voc['voc12_root'], cls_labels={},
                                batch_size=1)


def _list_ids(path):
    from common.data.lists import load_img_name_list
    return load_img_name_list(path)


def test_train_cls_jitter_strengths_hue_zero_keeps_hue():
    img = Image.fromarray(np.full((16, 16, 3), (240, 40, 40), np.uint8))
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])

    def hue(seed, jitter):
        out = T.psa_cls_train_transform(img, crop_size=16, rng=random.Random(seed), min_long=16, max_long=16,
                                         jitter=jitter)
        rgb = np.clip((out[8, 8] * std + mean), 0, 1)
        return colorsys.rgb_to_hsv(*rgb)[0]

    hues = [hue(seed, (0.3, 0.3, 0.3, 0.0)) for seed in range(8)]
    assert max(min(h, 1 - h) for h in hues) < 0.01  # red stays red under brightness/contrast/saturation
    shifted = [hue(seed, (0.3, 0.3, 0.3, 0.1)) for seed in range(8)]  # the original's +-0.1 hue jitter
    assert max(min(h, 1 - h) for h in shifted) > 0.03
