"""tf.data pipelines: shapes, determinism, shuffling, sharding, parity with the readers, bad input."""
import logging
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from common.data import read_images_from_disk, read_images_from_disk_for_segsort
from common.data.lists import EmptyListError
from common.data.pipeline import build_inference_dataset, build_segmentation_dataset, input_options
from common.train.strategy import make_strategy

H, W = 20, 28


def _make_set(root, count=6, hed=False):
    """VOC-like tiny set: JPEG images, grayscale PNG labels whose values encode the sample index."""
    rng = np.random.default_rng(0)
    for sub in ('VOC2012/JPEGImages', 'VOC2012/segcls', 'VOC2012/hed'):
        os.makedirs(root / sub, exist_ok=True)
    lines = []
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(root / f'VOC2012/JPEGImages/{i}.jpg')
        label = np.full((H, W), i, np.uint8)
        label[:3, :3] = 255
        Image.fromarray(label).save(root / f'VOC2012/segcls/{i}.png')
        if hed:
            Image.fromarray(rng.integers(0, 9, (H, W), dtype=np.uint8)).save(root / f'VOC2012/hed/{i}.png')
        lines.append(f'VOC2012/JPEGImages/{i}.jpg VOC2012/segcls/{i}.png')
    (root / 'list.txt').write_text('\n'.join(lines) + '\n')
    return str(root) + '/', str(root / 'list.txt')


def _labels_of(dataset, count):
    """Sample indices (label value at pixel (10, 10)) of the first `count` batches of batch size 1."""
    return [int(b[1][0, 10, 10, 0]) for b in dataset.take(count)]


def test_training_batches_shapes_and_dtypes(tmp_path):
    data_dir, data_list = _make_set(tmp_path)
    ds = build_segmentation_dataset(data_dir, data_list, (16, 24), 4, True, True, True, num_classes=21, seed=3)
    images, labels = next(iter(ds))
    assert images.shape == (4, 16, 24, 3) and images.dtype == tf.float32
    assert labels.shape == (4, 16, 24, 1) and labels.dtype == tf.uint8
    assert ds.element_spec[0].shape == (4, 16, 24, 3)  # static batch (drop_remainder) for the training step


def test_same_seed_same_batches_other_seed_differs(tmp_path):
    data_dir, data_list = _make_set(tmp_path)
    kwargs = dict(input_size=(16, 16), batch_size=2, random_scale=True, random_mirror=True, random_crop=True,
                  deterministic=True)
    first = [b[0].numpy() for b in build_segmentation_dataset(data_dir, data_list, seed=11, **kwargs).take(4)]
    again = [b[0].numpy() for b in build_segmentation_dataset(data_dir, data_list, seed=11, **kwargs).take(4)]
    other = [b[0].numpy() for b in build_segmentation_dataset(data_dir, data_list, seed=12, **kwargs).take(4)]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other))


def test_per_epoch_shuffle_is_a_permutation_and_reshuffles(tmp_path):
    data_dir, data_list = _make_set(tmp_path, count=6)
    ds = build_segmentation_dataset(data_dir, data_list, (H, W), 1, seed=5, deterministic=True)
    order = _labels_of(ds, 18)
    epochs = [order[0:6], order[6:12], order[12:18]]
    for epoch in epochs:
        assert sorted(epoch) == list(range(6))
    assert len({tuple(e) for e in epochs}) > 1  # reshuffled each epoch
    assert epochs[0] != list(range(6)) or epochs[1] != list(range(6))


def test_no_shuffle_no_repeat_keeps_list_order_and_remainder(tmp_path):
    data_dir, data_list = _make_set(tmp_path, count=5)
    ds = build_segmentation_dataset(data_dir, data_list, (H, W), 2, shuffle=False, repeat=False, deterministic=True,
                                    drop_remainder=False)
    batches = list(ds)
    assert [int(b[1].shape[0]) for b in batches] == [2, 2, 1]
    assert [int(v) for b in batches for v in b[1][:, 10, 10, 0]] == [0, 1, 2, 3, 4]


def test_pipeline_matches_reader_on_deterministic_path(tmp_path):
    data_dir, data_list = _make_set(tmp_path, count=3)
    ds = build_segmentation_dataset(data_dir, data_list, (24, 24), 1, random_crop=False, shuffle=False)
    for i, (image, label) in enumerate(ds.take(3)):
        paths = [f'{data_dir}VOC2012/JPEGImages/{i}.jpg', f'{data_dir}VOC2012/segcls/{i}.png']
        ref_image, ref_label = read_images_from_disk(paths, (24, 24), False, False, False, 255,
                                                     (122.675, 116.669, 104.008))
        np.testing.assert_array_equal(image[0].numpy(), ref_image.numpy())
        np.testing.assert_array_equal(label[0].numpy(), ref_label.numpy())


def test_segsort_reader_pipeline_matches_reader(tmp_path):
    data_dir, data_list = _make_set(tmp_path, count=2)
    ds = build_segmentation_dataset(data_dir, data_list, (24, 32), 1, shuffle=False, reader='segsort',
                                    num_clusters=(3, 4))
    batch = next(iter(ds))
    ref = read_images_from_disk_for_segsort([f'{data_dir}VOC2012/JPEGImages/0.jpg', f'{data_dir}VOC2012/segcls/0.png'],
                                            (24, 32), False, False, False, 255, (122.675, 116.669, 104.008), [3, 4])
    assert len(batch) == 4
    for got, want in zip(batch, ref[:4]):
        np.testing.assert_array_equal(got[0].numpy(), want.numpy())


def test_segsort_unsup_pipeline_reads_hed(tmp_path):
    data_dir, data_list = _make_set(tmp_path, count=2, hed=True)
    ds = build_segmentation_dataset(data_dir, data_list, (H, W), 1, shuffle=False, reader='segsort_unsup')
    image, label, cluster = next(iter(ds))
    hed = np.array(Image.open(tmp_path / 'VOC2012/hed/0.png'))
    assert label.dtype == tf.int32 and cluster.dtype == tf.int32
    np.testing.assert_array_equal(cluster[0, :, :, 0].numpy(), hed)
    assert int(label[0, 10, 10, 0]) == 0


def test_input_context_shards_and_per_replica_batch(tmp_path):
    data_dir, data_list = _make_set(tmp_path, count=8)
    seen = []
    for pipeline_id in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline_id,
                                         num_replicas_in_sync=2)
        ds = build_segmentation_dataset(data_dir, data_list, (H, W), 4, shuffle=False, repeat=False,
                                        input_context=ctx)
        batches = list(ds)
        assert all(int(b[0].shape[0]) == 2 for b in batches)  # global 4 over 2 replicas
        seen.append({int(v) for b in batches for v in b[1][:, 10, 10, 0]})
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(range(8))


def test_distribute_datasets_from_function_runs(tmp_path):
    data_dir, data_list = _make_set(tmp_path, count=4)
    strategy = make_strategy(devices=['/cpu:0', '/cpu:1'])  # shared per process, see make_strategy
    dist = strategy.distribute_datasets_from_function(
        lambda ctx: build_segmentation_dataset(data_dir, data_list, (16, 16), 4, True, True, True, seed=1,
                                               input_context=ctx))
    images, _ = next(iter(dist))
    assert [int(t.shape[0]) for t in strategy.experimental_local_results(images)] == [2, 2]


def test_inference_dataset_list_order_with_paths(tmp_path):
    data_dir, data_list = _make_set(tmp_path, count=4)
    elements = list(build_inference_dataset(data_dir, data_list, num_classes=21))
    assert [e[2].numpy().decode() for e in elements] == [f'{data_dir}VOC2012/JPEGImages/{i}.jpg' for i in range(4)]
    assert all(e[0].shape == (H, W, 3) and e[1].shape == (H, W, 1) for e in elements)
    assert [int(e[1][10, 10, 0]) for e in elements] == [0, 1, 2, 3]


def test_inference_dataset_single_column_test_list(tmp_path):
    data_dir, _ = _make_set(tmp_path, count=2)
    (tmp_path / 'test.txt').write_text('VOC2012/JPEGImages/0.jpg\nVOC2012/JPEGImages/1.jpg\n')
    elements = list(build_inference_dataset(data_dir, str(tmp_path / 'test.txt')))
    assert len(elements) == 2 and elements[1][1].shape == (H, W, 1)


# ---------------------------------------------------------------------------------------------- bad input
def test_missing_label_names_line_and_path(tmp_path):
    data_dir, data_list = _make_set(tmp_path, count=3)
    os.remove(tmp_path / 'VOC2012/segcls/1.png')
    with pytest.raises(FileNotFoundError, match=r'line 2: label file not found: .*segcls/1\.png'):
        build_segmentation_dataset(data_dir, data_list, (16, 16), 1)


def test_missing_image_names_line_and_path(tmp_path):
    data_dir, data_list = _make_set(tmp_path, count=3)
    os.remove(tmp_path / 'VOC2012/JPEGImages/2.jpg')
    with pytest.raises(FileNotFoundError, match=r'list\.txt line 3: image file not found: .*JPEGImages/2\.jpg'):
        build_inference_dataset(data_dir, data_list)


def test_unreadable_image_content_names_path(tmp_path):
    data_dir, data_list = _make_set(tmp_path, count=2)
    (tmp_path / 'VOC2012/JPEGImages/1.jpg').write_bytes(b'not an image at all')
    ds = build_inference_dataset(data_dir, data_list)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r'line 2: image file .*1\.jpg is not a readable image'):
        list(ds)


def test_size_mismatch_names_both_paths_and_sizes(tmp_path):
    data_dir, data_list = _make_set(tmp_path, count=2)
    Image.fromarray(np.zeros((H + 1, W, ), np.uint8)).save(tmp_path / 'VOC2012/segcls/0.png')
    ds = build_segmentation_dataset(data_dir, data_list, (16, 16), 1, shuffle=False)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf'line 1: label .*segcls/0\.png has size {H + 1}x{W} '
                             rf'but image .*0\.jpg has size {H}x{W}'):
        next(iter(ds))


def test_label_values_out_of_range(tmp_path):
    data_dir, data_list = _make_set(tmp_path, count=2)
    bad = np.zeros((H, W), np.uint8)
    bad[5, 5] = 30
    Image.fromarray(bad).save(tmp_path / 'VOC2012/segcls/1.png')
    ds = build_inference_dataset(data_dir, data_list, num_classes=21)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r'line 2: label .*1\.png has value 30 outside \[0, 21\)'):
        list(ds)
    assert len(list(build_inference_dataset(data_dir, data_list, num_classes=31))) == 2  # 255 and 30 < 31 allowed


def test_empty_list_file_named(tmp_path):
    (tmp_path / 'empty.txt').write_text('')
    with pytest.raises(EmptyListError, match='empty.txt is empty'):
        build_segmentation_dataset(str(tmp_path) + '/', str(tmp_path / 'empty.txt'), (16, 16), 1)


def test_skip_bad_samples_logs_and_drops(tmp_path, caplog):
    data_dir, data_list = _make_set(tmp_path, count=5)
    os.remove(tmp_path / 'VOC2012/JPEGImages/0.jpg')                       # missing (line 1)
    Image.fromarray(np.zeros((H, W + 2), np.uint8)).save(tmp_path / 'VOC2012/segcls/2.png')  # size (line 3)
    bad = np.full((H, W), 3, np.uint8)
    bad[0, 0] = 99
    Image.fromarray(bad).save(tmp_path / 'VOC2012/segcls/3.png')           # value (line 4)
    with caplog.at_level(logging.WARNING):
        ds = build_segmentation_dataset(data_dir, data_list, (H, W), 1, shuffle=False, repeat=False,
                                        num_classes=21, skip_bad_samples=True)
        kept = _labels_of(ds, 10)
    assert kept == [1, 4]
    text = caplog.text
    assert 'line 1: image file not found' in text
    assert 'line 3: label' in text and 'has size' in text
    assert 'line 4: label' in text and 'value 99' in text


@pytest.mark.parametrize('which', ['image', 'label'])
def test_truncated_file_with_valid_header_names_path(tmp_path, which):
    """A JPEG / PNG cut in half keeps a valid header; TensorFlow's decoder would fail without naming the file."""
    data_dir, data_list = _make_set(tmp_path, count=2)
    path = tmp_path / ('VOC2012/JPEGImages/1.jpg' if which == 'image' else 'VOC2012/segcls/1.png')
    content = path.read_bytes()
    path.write_bytes(content[:len(content) // 2])
    kind = 'image' if which == 'image' else 'label'
    pattern = rf'line 2: {kind} file .*{path.name} is truncated'
    with pytest.raises(tf.errors.InvalidArgumentError, match=pattern):
        list(build_segmentation_dataset(data_dir, data_list, (16, 16), 1, shuffle=False, repeat=False))
    with pytest.raises(tf.errors.InvalidArgumentError, match=pattern):
        list(build_inference_dataset(data_dir, data_list))
    # Padding after the end marker (some writers add it) is not truncation.
    path.write_bytes(content + b'\0' * 16)
    assert len(list(build_inference_dataset(data_dir, data_list))) == 2


def test_training_pipelines_run_without_the_autotuning_model(tmp_path):
    # its optimisation thread kept a finished training run alive for up to a minute (iterator teardown waited)
    data_dir, data_list = _make_set(tmp_path)
    dataset = build_segmentation_dataset(data_dir, data_list, (16, 16), 2, seed=0, deterministic=True)
    assert dataset.options().autotune.enabled is False
    assert dataset.options().deterministic is True
    assert input_options(deterministic=False).deterministic is False
    assert input_options().threading.max_intra_op_parallelism == 1

