"""Golden parity of the AAF / SegSort readers (forced random draws) plus properties of the seeded paths."""
import numpy as np
import pytest
import tensorflow as tf

from common.data import (IMG_MEAN, crop_and_pad_image_and_labels, image_mirroring, image_scaling,
                         read_images_from_disk, read_images_from_disk_for_segsort,
                         read_images_from_disk_for_unsup_segsort, shrink_labels)


def _check(outputs, names, outs, case, i, assert_golden):
    for name, value in zip(names, outputs):
        expected = outs[f'{name}_{i}']
        value = np.asarray(value)
        assert value.shape == expected.shape, (name, i)
        assert value.dtype == expected.dtype, (name, i, value.dtype, expected.dtype)
        assert_golden(value, expected, case['tolerance'][f'out_{name}_{i}'])


def _draws(ins, i):
    draws = {}
    for key, arg in (('scale_draw', 'scale'), ('mirror_draw', 'mirror_draw'), ('crop_draw', 'crop_offset')):
        if f'{key}_{i}' in ins:
            draws[arg] = ins[f'{key}_{i}']
    return draws


def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data.tobytes())
    return str(path)


def test_image_scaling_golden(golden, assert_golden):
    ins, outs, case = golden('aaf_reader_image_scaling')
    for i, scale in enumerate(ins['scales']):
        result = image_scaling(ins['image'], ins['label'], scale=scale)
        assert list(result[0].shape[:2]) == case['scalars']['new_hw'][i]
        _check(result, ['image', 'label'], outs, case, i, assert_golden)


def test_image_mirroring_golden(golden, assert_golden):
    ins, outs, case = golden('aaf_reader_image_mirroring')
    for i, draw in enumerate(ins['draws']):
        _check(image_mirroring(ins['image'], ins['label'], mirror_draw=draw), ['image', 'label'], outs, case, i,
               assert_golden)


def test_crop_and_pad_center_golden(golden, assert_golden):
    ins, outs, case = golden('aaf_reader_crop_and_pad_center')
    for i, sub in enumerate(case['scalars']['subcases']):
        crop_h, crop_w = sub['crop_size']
        result = crop_and_pad_image_and_labels(ins['image'], ins['label'], crop_h, crop_w, 255, random_crop=False)
        _check(result, ['image', 'label'], outs, case, i, assert_golden)


def test_crop_and_pad_random_golden(golden, assert_golden):
    ins, outs, case = golden('aaf_reader_crop_and_pad_random')
    for i, sub in enumerate(case['scalars']['subcases']):
        crop_h, crop_w = sub['crop_size']
        result = crop_and_pad_image_and_labels(ins['image'], ins['label'], crop_h, crop_w, 255, random_crop=True,
                                               crop_offset=ins['crop_draws'][i])
        _check(result, ['image', 'label'], outs, case, i, assert_golden)


def test_read_images_from_disk_golden(golden, assert_golden, tmp_path):
    ins, outs, case = golden('aaf_reader_read_images_from_disk')
    paths = [_write(tmp_path, 'img.jpg', ins['image_jpeg']), _write(tmp_path, 'label.png', ins['label_png'])]
    sc = case['scalars']
    for i, sub in enumerate(sc['subcases']):
        result = read_images_from_disk(paths, sub['input_size'], sub['random_scale'], sub['random_mirror'],
                                       sub['random_crop'], sc['ignore_label'], sc['img_mean'], **_draws(ins, i))
        _check(result, ['image', 'label'], outs, case, i, assert_golden)


def test_read_images_from_disk_for_segsort_golden(golden, assert_golden, tmp_path):
    ins, outs, case = golden('segsort_reader_read_images_from_disk_for_segsort')
    paths = [_write(tmp_path, 'img.jpg', ins['image_jpeg']), _write(tmp_path, 'label.png', ins['label_png'])]
    sc = case['scalars']
    names = ['image', 'semantic_label', 'cluster_label', 'loc_feature', 'height', 'width']
    for i, sub in enumerate(sc['subcases']):
        result = read_images_from_disk_for_segsort(paths, sub['input_size'], sub['random_scale'],
                                                   sub['random_mirror'], sub['random_crop'], sc['ignore_label'],
                                                   sc['img_mean'], sub['num_clusters'], **_draws(ins, i))
        _check(result, names, outs, case, i, assert_golden)


def test_read_images_from_disk_for_unsup_segsort_golden(golden, assert_golden, tmp_path):
    ins, outs, case = golden('segsort_reader_read_images_from_disk_for_unsup_segsort')
    paths = [_write(tmp_path, 'img.jpg', ins['image_jpeg']), _write(tmp_path, 'label.png', ins['label_png']),
             _write(tmp_path, 'hed.png', ins['hed_png'])]
    sc = case['scalars']
    for i, sub in enumerate(sc['subcases']):
        result = read_images_from_disk_for_unsup_segsort(paths, sub['input_size'], sub['random_scale'],
                                                         sub['random_mirror'], sub['random_crop'],
                                                         sc['ignore_label'], sc['img_mean'], **_draws(ins, i))
        _check(result, ['image', 'label', 'cluster_label'], outs, case, i, assert_golden)


def test_seeded_draws_are_deterministic_and_cover_the_range():
    image = tf.random.stateless_uniform([20, 30, 3], seed=[1, 2])
    label = tf.cast(tf.random.stateless_uniform([20, 30, 1], seed=[3, 4], maxval=21, dtype=tf.int32), tf.uint8)
    sizes = set()
    for k in range(40):
        a = image_scaling(image, label, seed=[7, k])
        b = image_scaling(image, label, seed=[7, k])
        np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
        sizes.add(int(a[0].shape[0]))
    # s ~ U[0.5, 2.0): heights from 10 to 39 for H = 20; 40 draws must spread widely (wrong range would not).
    assert min(sizes) >= 10 and max(sizes) <= 39 and max(sizes) - min(sizes) > 15
    flips = [bool(np.array_equal(image_mirroring(image, label, seed=[5, k])[0].numpy(), image.numpy()[:, ::-1]))
             for k in range(40)]
    assert 5 < sum(flips) < 35


def test_generator_source_is_reproducible():
    image = tf.random.stateless_uniform([12, 16, 3], seed=[1, 2])
    label = tf.zeros([12, 16, 1], tf.uint8)
    runs = []
    for _ in range(2):
        rng = tf.random.Generator.from_seed(4)
        runs.append([crop_and_pad_image_and_labels(image, label, 8, 8, 255, True, rng=rng)[0].numpy()
                     for _ in range(3)])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(runs[0][0], r) for r in runs[0][1:])  # the generator advances


def test_random_crop_draw_is_taken_modulo_the_offset_range():
    image = np.arange(10 * 12 * 3, dtype=np.float32).reshape(10, 12, 3)
    label = np.zeros([10, 12, 1], np.uint8)
    # limit = (10 - 4 + 1, 12 - 5 + 1) = (7, 8): draw (9, 17) -> offset (2, 1), as tf.random_crop.
    img, _ = crop_and_pad_image_and_labels(image, label, 4, 5, 255, True, crop_offset=[9, 17, 0])
    np.testing.assert_array_equal(img.numpy(), image[2:6, 1:6])


def test_crop_and_pad_pads_label_with_ignore_and_image_with_zero():
    image = np.ones([3, 4, 3], np.float32)
    label = np.full([3, 4, 1], 7, np.uint8)
    img, lab = crop_and_pad_image_and_labels(image, label, 5, 6, 255, random_crop=False)
    assert lab.dtype == tf.uint8
    np.testing.assert_array_equal(lab.numpy()[:3, :4, 0], 7)
    assert (lab.numpy()[3:] == 255).all() and (lab.numpy()[:, 4:] == 255).all()
    assert (img.numpy()[3:] == 0).all() and (img.numpy()[:3, :4] == 1).all()


def test_shrink_labels_legacy_nearest():
    labels = np.arange(336 * 336, dtype=np.int32).reshape(1, 336, 336, 1)
    out = shrink_labels(labels).numpy()
    assert out.shape == (1, 42, 42, 1)
    np.testing.assert_array_equal(out[0, :, :, 0], labels[0, ::8, ::8, 0])
    odd = np.arange(21 * 13, dtype=np.int32).reshape(21, 13, 1)
    out = shrink_labels(odd).numpy()
    assert out.shape == (3, 2, 1)
    rows = np.floor(np.arange(3) * 21 / 3).astype(int)
    cols = np.floor(np.arange(2) * 13 / 2).astype(int)
    np.testing.assert_array_equal(out[:, :, 0], odd[rows][:, cols, 0])


def test_img_mean_is_rgb():
    assert IMG_MEAN == pytest.approx((122.675, 116.669, 104.008))
