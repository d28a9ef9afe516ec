"""common.eval.metrics: golden parity with AAF's iou_stats / benchmark scripts and NumPy references."""
import numpy as np
import pytest

from common.eval import metrics


def _histogram_iou_stats(pred, target, num_classes):
    """Reference: the np.histogram formulation of the original utils/metrics.iou_stats."""
    edges = np.arange(num_classes + 1)
    locs = (target > -1) & (target < num_classes)
    return (np.histogram(target[locs], bins=edges)[0], np.histogram(pred[locs], bins=edges)[0],
            np.histogram(target[locs & (pred == target)], bins=edges)[0])


def _loop_confusion(pred, target, num_classes):
    """Reference: per-class histogram loop of the original confusion_matrix."""
    mat = np.zeros((num_classes, num_classes))
    for c in range(num_classes):
        mask = target == c
        if mask.any():
            mat[c] += np.histogram(pred[mask], bins=np.arange(num_classes + 1))[0]
    return mat


def _random_pair(rng, shape, num_classes, dtype=np.int64, low=-3, extra=4):
    """Labels incl. negatives, the value C (closed last histogram bin), values > C and 255."""
    pred = rng.integers(low, num_classes + extra, size=shape).astype(dtype)
    target = rng.integers(low, num_classes + extra, size=shape).astype(dtype)
    pred[rng.random(shape) < 0.1] = num_classes
    target[rng.random(shape) < 0.1] = 255 if np.iinfo(dtype).max >= 255 else num_classes + 1
    same = rng.random(shape) < 0.4
    pred[same] = target[same]
    return pred, target


def test_iou_stats_golden(golden, assert_golden):
    ins, outs, case = golden('aaf_iou_stats')
    tp_fn, tp_fp, tp = metrics.iou_stats(ins['pred'], ins['target'], case['scalars']['num_classes'])
    assert_golden(tp_fn, outs['tp_fn'], case['tolerance']['out_tp_fn'])
    assert_golden(tp_fp, outs['tp_fp'], case['tolerance']['out_tp_fp'])
    assert_golden(tp, outs['tp'], case['tolerance']['out_tp'])


@pytest.mark.parametrize('dtype', [np.uint8, np.int8, np.uint16, np.int16, np.int32, np.int64])
@pytest.mark.parametrize('num_classes', [1, 5, 21])
def test_iou_stats_matches_histogram_reference(dtype, num_classes):
    rng = np.random.default_rng(num_classes)
    low = 0 if np.issubdtype(dtype, np.unsignedinteger) else -3
    pred, target = _random_pair(rng, (17, 23), num_classes, dtype, low=low)
    for got, want in zip(metrics.iou_stats(pred, target, num_classes),
                         _histogram_iou_stats(pred, target, num_classes)):
        np.testing.assert_array_equal(got, want)


def test_iou_stats_bool_labels():
    rng = np.random.default_rng(1)
    pred, target = rng.random((6, 5)) < 0.5, rng.random((6, 5)) < 0.5
    for got, want in zip(metrics.iou_stats(pred, target, 2),
                         _histogram_iou_stats(pred.astype(np.uint8), target.astype(np.uint8), 2)):
        np.testing.assert_array_equal(got, want)


def test_iou_stats_last_bin_quirk():
    # A prediction equal to C is counted as class C-1 in TP+FP but is not a true positive; C+1 is dropped.
    pred = np.array([3, 3, 4, 0])
    target = np.array([2, 2, 2, 255])
    tp_fn, tp_fp, tp = metrics.iou_stats(pred, target, num_classes=3)
    np.testing.assert_array_equal(tp_fn, [0, 0, 3])
    np.testing.assert_array_equal(tp_fp, [0, 0, 2])
    np.testing.assert_array_equal(tp, [0, 0, 0])


def test_iou_stats_float_inputs_follow_histogram():
    rng = np.random.default_rng(3)
    pred = rng.uniform(-1, 6, size=(9, 7))
    target = rng.integers(0, 6, size=(9, 7)).astype(np.float32)
    target[0, :3] = -0.5  # passes the `target > -1` mask but falls outside every histogram bin
    for got, want in zip(metrics.iou_stats(pred, target, 5), _histogram_iou_stats(pred, target, 5)):
        np.testing.assert_array_equal(got, want)


def test_iou_stats_shape_mismatch_is_clear():
    with pytest.raises(ValueError, match='same shape'):
        metrics.iou_stats(np.zeros((2, 3), np.uint8), np.zeros((3, 2), np.uint8))


@pytest.mark.parametrize('num_classes', [2, 21])
def test_confusion_matrix_matches_loop_reference(num_classes):
    rng = np.random.default_rng(7)
    pred, target = _random_pair(rng, (31, 29), num_classes)
    got = metrics.confusion_matrix(pred, target, num_classes)
    assert got.dtype == np.float64 and got.shape == (num_classes, num_classes)
    np.testing.assert_array_equal(got, _loop_confusion(pred, target, num_classes))


def test_accuracy_divides_by_first_dimension():
    pred = np.array([[1, 2, 3], [1, 0, 0]])
    target = np.array([[1, 2, 0], [1, 0, 5]])
    assert metrics.accuracy(pred, target) == 4 / 2  # original quirk: / pred.shape[0], not / pred.size


def test_segmentation_metric_golden(golden, assert_golden):
    ins, outs, case = golden('aaf_benchmark_miou')
    metric = metrics.SegmentationMetric(case['scalars']['num_classes'])
    for i in range(case['scalars']['num_images']):
        metric.update(ins[f'pred_{i}'], ins[f'gt_{i}'])
    result = metric.results()
    for key in ('tp_fn', 'tp_fp', 'tp', 'iou', 'mean_iou', 'pixel_acc'):
        assert_golden(result[key], outs[key], case['tolerance']['out_' + key])
    assert_golden(metric.mean_iou(), outs['mean_iou'], case['tolerance']['out_mean_iou'])
    assert_golden(metric.pixel_accuracy(), outs['pixel_acc'], case['tolerance']['out_pixel_acc'])


def test_segmentation_metric_accumulates_split_not_image_mean():
    rng = np.random.default_rng(11)
    pairs = [_random_pair(rng, shape, 6) for shape in [(5, 8), (12, 3), (7, 7)]]
    metric = metrics.SegmentationMetric(6)
    sums = np.zeros((3, 6))
    for pred, target in pairs:
        metric.update(pred, target)
        sums += np.array(_histogram_iou_stats(pred, target, 6))
    tp_fn, tp_fp, tp = sums
    want_iou = tp / (tp_fn + tp_fp - tp + 1e-12) * 100
    np.testing.assert_allclose(metric.iou(), want_iou, rtol=1e-12)
    np.testing.assert_allclose(metric.mean_iou(), want_iou.sum() / 6, rtol=1e-12)
    np.testing.assert_allclose(metric.pixel_accuracy(), tp.sum() / (tp_fp.sum() + 1e-12), rtol=1e-12)
    # confusion_matrix of the accumulator equals the summed per-image matrices
    np.testing.assert_array_equal(metric.confusion_matrix(),
                                  sum(metrics.confusion_matrix(p, t, 6) for p, t in pairs))
    # merge of two halves == one pass
    first, second = metrics.SegmentationMetric(6), metrics.SegmentationMetric(6)
    first.update(*pairs[0])
    for pair in pairs[1:]:
        second.update(*pair)
    np.testing.assert_array_equal(first.merge(second).counts, metric.counts)
    assert first.num_images == 3


def test_mean_iou_absent_classes():
    pred = np.array([[0, 0, 1, 1]])
    target = np.array([[0, 0, 1, 1]])
    metric = metrics.SegmentationMetric(4).update(pred, target)
    np.testing.assert_allclose(metric.iou(), [100, 100, 0, 0])
    assert metric.mean_iou() == pytest.approx(50.0)  # original: classes 2 and 3 count as 0
    assert metric.mean_iou(skip_absent=True) == pytest.approx(100.0)


def test_instance_metric_golden(golden, assert_golden):
    ins, outs, case = golden('aaf_benchmark_instance_miou')
    metric = metrics.InstanceSegmentationMetric(case['scalars']['num_classes'])
    for i in range(case['scalars']['num_images']):
        metric.update(ins[f'pred_{i}'], ins[f'gt_{i}'], ins[f'inst_{i}'])
    result = metric.results()
    for key in ('iou', 'mean_iou', 'ninst'):
        assert_golden(result[key], outs[key], case['tolerance']['out_' + key])


def test_instance_counts_index_quirk_and_fix():
    gt = np.array([[0, 0, 3, 3],
                   [0, 255, 3, 1],
                   [2, 255, 255, 1]])
    inst = np.array([[0, 0, 1, 1],
                     [0, 255, 1, 2],
                     [3, 255, 255, 2]])
    # regions: 0 -> class 0, 1 -> class 3, 2 -> class 1, 3 -> class 2, 255 (only void gt) -> class 0
    np.testing.assert_array_equal(metrics.instance_counts(gt, inst, 4), [2, 1, 1, 1])
    np.testing.assert_array_equal(metrics.instance_counts(gt, inst, 4, skip_void_instance=True), [1, 1, 1, 1])


def test_instance_counts_ties_and_256_regions():
    # tie between classes 1 and 2 inside one region -> lowest class wins (np.argmax)
    np.testing.assert_array_equal(metrics.instance_counts(np.array([[1, 2]]), np.array([[7, 7]]), 3), [0, 1, 0])
    # with all 256 values present, the region at sorted index 255 (value 255) is the one skipped
    inst = np.arange(256).reshape(16, 16)
    gt = np.ones((16, 16), np.int64)
    np.testing.assert_array_equal(metrics.instance_counts(gt, inst, 2), [0, 255])


def test_instance_metric_matches_loop_reference():
    rng = np.random.default_rng(5)
    num_classes = 4
    metric = metrics.InstanceSegmentationMetric(num_classes)
    weighted, ninst_total = np.zeros(num_classes), np.zeros(num_classes)
    for _ in range(3):
        gt = rng.integers(0, num_classes, size=(9, 11))
        gt[rng.random(gt.shape) < 0.1] = 255
        pred = np.where(rng.random(gt.shape) < 0.6, gt, rng.integers(0, num_classes, size=gt.shape))
        inst = rng.integers(0, 5, size=gt.shape)
        inst[gt == 255] = 255
        metric.update(pred, gt, inst)
        ninst = np.zeros(num_classes)
        for i, value in enumerate(np.unique(inst)):
            if i < 255:
                hist, _ = np.histogram(gt[inst == value], bins=num_classes, range=(0, num_classes - 1))
                ninst[np.argmax(hist)] += 1
        tp_fn, tp_fp, tp = _histogram_iou_stats(pred, gt, num_classes)
        weighted += tp / (tp_fn + tp_fp - tp + 1e-12) * ninst
        ninst_total += ninst
    want = weighted / (ninst_total + 1e-12) * 100
    np.testing.assert_allclose(metric.iou(), want, rtol=1e-12)
    np.testing.assert_array_equal(metric.ninst, ninst_total)
    assert metric.mean_iou() == pytest.approx(want.sum() / num_classes, rel=1e-12)


# ---- property-based: iou_stats / SegmentationMetric against a NumPy reference ----
from hypothesis import given, settings, strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402

_C = 5


def _label_maps(size):
    """Predictions in [0, C] (C: the histogram quirk) or 255, targets in [0, C-1] or 255 (ignored)."""
    shape = st.just(size)
    return st.tuples(arrays(np.int64, shape, elements=st.one_of(st.integers(0, _C), st.just(255))),
                     arrays(np.int64, shape, elements=st.one_of(st.integers(0, _C - 1), st.just(255))))


def _reference_stats(pred, target, num_classes=_C):
    """Per-class counts by explicit loops over valid pixels (target in [0, C-1]); pred == C counts as C-1."""
    tp_fn, tp_fp, tp = (np.zeros(num_classes, np.int64) for _ in range(3))
    for p, t in zip(pred.ravel(), target.ravel()):
        if not 0 <= t < num_classes:
            continue
        tp_fn[t] += 1
        if 0 <= p <= num_classes:
            tp_fp[min(p, num_classes - 1)] += 1
        tp[t] += int(p == t)
    return tp_fn, tp_fp, tp


@settings(max_examples=40, deadline=None)
@given(maps=st.integers(1, 40).flatmap(_label_maps), seed=st.integers(0, 2 ** 16))
def test_iou_stats_property_reference_permutation_and_ignore(maps, seed):
    pred, target = maps
    got = metrics.iou_stats(pred, target, _C)
    for g, want in zip(got, _reference_stats(pred, target)):
        np.testing.assert_array_equal(g, want)
    # Counts add up: every valid pixel is in exactly one class of tp_fn.
    assert got[0].sum() == np.count_nonzero(target != 255)
    # Permutation invariance: the same shuffle of both maps changes nothing.
    order = np.random.default_rng(seed).permutation(pred.size)
    for g, again in zip(got, metrics.iou_stats(pred[order], target[order], _C)):
        np.testing.assert_array_equal(g, again)
    # Ignore handling: predictions at ignored pixels do not count.
    scrambled = np.where(target == 255, np.random.default_rng(seed).integers(0, _C, pred.shape), pred)
    for g, again in zip(got, metrics.iou_stats(scrambled, target, _C)):
        np.testing.assert_array_equal(g, again)


@settings(max_examples=25, deadline=None)
@given(images=st.lists(st.integers(1, 30).flatmap(_label_maps), min_size=1, max_size=5), seed=st.integers(0, 99))
def test_segmentation_metric_property_sums_merges_and_order(images, seed):
    whole = metrics.SegmentationMetric(_C)
    for pred, target in images:
        whole.update(pred, target)
    per_image = [_reference_stats(p, t) for p, t in images]
    sums = [np.sum([s[k] for s in per_image], axis=0) for k in range(3)]
    for got, want in zip(whole.stats(), sums):
        np.testing.assert_array_equal(got, want)
    # Image order and splitting the split across workers (merge) do not matter.
    order = np.random.default_rng(seed).permutation(len(images))
    first, second = metrics.SegmentationMetric(_C), metrics.SegmentationMetric(_C)
    for rank, index in enumerate(order):
        (first if rank % 2 else second).update(*images[index])
    merged = first.merge(second)
    np.testing.assert_array_equal(merged.counts, whole.counts)
    assert merged.num_images == whole.num_images == len(images)
    tp_fn, tp_fp, tp = (s.astype(np.float64) for s in sums)
    np.testing.assert_allclose(whole.iou(), 100 * tp / (tp_fn + tp_fp - tp + 1e-12))
    assert whole.pixel_accuracy() == pytest.approx(tp.sum() / (tp_fp.sum() + 1e-12))
    np.testing.assert_array_equal(whole.confusion_matrix().sum(axis=0), tp_fp.astype(np.int64))
