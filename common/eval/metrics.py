"""Segmentation metrics of the originals (AAF/SegSort `utils/metrics.py`, `benchmark_by_*.py`), vectorised.

Every count here equals the originals' `np.histogram`-based counts bit for bit, including their quirks:

* `np.histogram(x, bins=np.arange(C + 1))` closes its last bin, so a prediction equal to `num_classes` is
  counted as class `C - 1` in TP+FP (but never as a true positive); predictions < 0 or > C are dropped.
* Pixels whose target is outside [0, C-1] (e.g. the 255 void label) are ignored.
* mIoU divides the sum of per-class IoUs by `num_classes`: classes absent from both prediction and ground truth
  count as 0 (`skip_absent=True` gives the usual nan-mean instead, as Cityscapes' evaluator does).
* The pixel accuracy is a fraction (the scripts print it with a '%' sign without multiplying by 100).
* Instance-wise mIoU (`benchmark_by_instance.py`) tests the *index* of an instance id (`if i < 255`), not its
  value, so the background region 0 and the void region 255 are counted as instances too.

Counting uses one `np.bincount` over (target, prediction) pairs instead of per-class histograms.
"""
import numpy as np

_EPS = 1e-12


def _as_integer_labels(array, name):
    """Returns `array` as an integer (or bool) array, or None when it holds non-integral floating values."""
    array = np.asarray(array)
    if array.dtype == bool or np.issubdtype(array.dtype, np.integer):
        return array
    if np.issubdtype(array.dtype, np.floating):
        if np.all(np.isfinite(array)) and np.all(array == np.floor(array)):
            return array.astype(np.int64)
        return None
    raise TypeError(f'{name}: expected an integer or float label array, got dtype {array.dtype}')


def _check_same_shape(pred, target):
    if np.shape(pred) != np.shape(target):
        raise ValueError(f'pred and target must have the same shape, got {np.shape(pred)} and {np.shape(target)}')


def _bin_index(values, low, high, scale, outside, index_dtype):
    """`values * scale` where low <= values <= high, else `outside`, flattened, as index_dtype.

    8/16-bit inputs go through a lookup table over every representable value (much faster than masking).
    """
    values = values.ravel()
    if values.dtype == bool:
        values = values.view(np.uint8)
    if values.dtype.itemsize <= 2:
        unsigned = values.view(np.dtype(f'u{values.dtype.itemsize}'))
        represented = np.arange(2 ** (8 * values.dtype.itemsize)).astype(np.int64)
        if np.issubdtype(values.dtype, np.signedinteger):
            represented = represented.astype(unsigned.dtype).view(values.dtype).astype(np.int64)
        table = np.where((represented >= low) & (represented <= high), represented * scale, outside)
        return table.astype(index_dtype)[unsigned]
    inside = (values >= low) & (values <= high)
    return np.where(inside, values.astype(index_dtype) * scale, outside).astype(index_dtype, copy=False)


def pair_counts(pred, target, num_classes):
    """Joint (ground truth, prediction) pixel counts with the originals' histogram binning.

    Args:
      pred: integer label array (any shape).
      target: integer label array of the same shape.
      num_classes: C.
    Returns:
      int64 array [C, C + 2]: row = ground-truth class (pixels with target outside [0, C-1] are not counted);
      columns 0..C-1 = predicted class, column C = prediction == C (which `np.histogram` puts in bin C-1),
      column C+1 = any other out-of-range prediction (dropped by `np.histogram`).
    """
    _check_same_shape(pred, target)
    pred_i = _as_integer_labels(pred, 'pred')
    target_i = _as_integer_labels(target, 'target')
    if pred_i is None or target_i is None:
        raise ValueError('pair_counts needs integer-valued labels (non-integral floats found)')
    width = num_classes + 2
    size = (num_classes + 1) * width  # one extra row collects ignored targets and is dropped below
    index_dtype = np.uint16 if size <= np.iinfo(np.uint16).max else np.intp
    flat = _bin_index(target_i, 0, num_classes - 1, width, num_classes * width, index_dtype)
    flat += _bin_index(pred_i, 0, num_classes, 1, num_classes + 1, index_dtype)
    counts = np.bincount(flat, minlength=size)
    return counts.reshape(num_classes + 1, width)[:num_classes].astype(np.int64)


def _stats_from_pair_counts(counts):
    """(tp_fn, tp_fp, tp) int64 [C] from a `pair_counts` matrix."""
    num_classes = counts.shape[0]
    tp_fn = counts.sum(axis=1)
    tp_fp = counts[:, :num_classes].sum(axis=0)
    tp_fp[num_classes - 1] += counts[:, num_classes].sum()  # last histogram bin is closed: value C lands there
    tp = np.diagonal(counts[:, :num_classes]).copy()
    return tp_fn, tp_fp, tp


def _iou_stats_histogram(pred, target, num_classes):
    """The original formulation, used for non-integral float inputs where the fast path does not apply."""
    pred = np.asarray(pred)
    target = np.asarray(target)
    edges = np.arange(num_classes + 1)
    locs = (target > -1) & (target < num_classes)
    tp_fn, _ = np.histogram(target[locs], bins=edges)
    tp_fp, _ = np.histogram(pred[locs], bins=edges)
    tp, _ = np.histogram(target[locs & (pred == target)], bins=edges)
    return tp_fn, tp_fp, tp


def iou_stats(pred, target, num_classes=21, background=0):
    """Per-class TP+FN, TP+FP and TP pixel counts of one prediction (original `utils/metrics.iou_stats`).

    Args:
      pred: label array (any shape), e.g. uint8 [H, W].
      target: ground-truth label array of the same shape; values outside [0, C-1] (255) are ignored.
      num_classes: C.
      background: unused (kept for the original's signature).
    Returns:
      (tp_fn, tp_fp, tp), each int64 [C]. A prediction equal to C counts in tp_fp[C-1] (histogram quirk).
    """
    del background  # the original never used it
    _check_same_shape(pred, target)
    pred_i = _as_integer_labels(pred, 'pred')
    target_i = _as_integer_labels(target, 'target')
    if pred_i is None or target_i is None:
        return _iou_stats_histogram(pred, target, num_classes)
    return _stats_from_pair_counts(pair_counts(pred_i, target_i, num_classes))


def confusion_matrix(pred, target, num_classes=21):
    """Confusion matrix of one prediction (original `utils/metrics.confusion_matrix`).

    Args:
      pred: integer label array (any shape).
      target: integer label array of the same shape.
      num_classes: C.
    Returns:
      float64 [C, C]; rows = ground-truth class, columns = predicted class. As in the original, a prediction
      equal to C is counted in column C-1 and other out-of-range predictions and targets are dropped.
    """
    counts = pair_counts(pred, target, num_classes)
    matrix = counts[:, :num_classes].astype(np.float64)
    matrix[:, num_classes - 1] += counts[:, num_classes]
    return matrix


def accuracy(pred, target):
    """Original `utils/metrics.accuracy`: number of equal pixels divided by `pred.shape[0]`.

    Quirk kept on purpose: for a 2-D [H, W] map this divides by H, not H*W, so it is not a pixel accuracy
    (the originals never call it). Use `SegmentationMetric.pixel_accuracy()` for the benchmark's number.

    Args:
      pred: array; target: array of the same shape.
    Returns:
      float.
    """
    pred = np.asarray(pred)
    return (pred == np.asarray(target)).sum() * 1.0 / pred.shape[0]


def iou_from_stats(tp_fn, tp_fp, tp):
    """Per-class IoU in percent, `100 * tp / (tp_fn + tp_fp - tp + 1e-12)` (as `benchmark_by_mIoU.py`)."""
    tp_fn, tp_fp, tp = (np.asarray(x, np.float64) for x in (tp_fn, tp_fp, tp))
    return tp / (tp_fn + tp_fp - tp + _EPS) * 100.0


def mean_iou_from_iou(iou, tp_fn=None, tp_fp=None, skip_absent=False):
    """mIoU in percent: `sum(iou) / C` (original, absent classes count 0) or, with `skip_absent`, the mean
    over classes present in the ground truth or the prediction (needs tp_fn and tp_fp; nan if none is)."""
    iou = np.asarray(iou, np.float64)
    if not skip_absent:
        return float(iou.sum() / iou.shape[0])
    if tp_fn is None or tp_fp is None:
        raise ValueError('skip_absent=True needs tp_fn and tp_fp')
    present = (np.asarray(tp_fn) + np.asarray(tp_fp)) > 0
    return float(iou[present].mean()) if present.any() else float('nan')


class SegmentationMetric:
    """Accumulates `benchmark_by_mIoU.py` statistics over a whole split (not a per-image average).

    Example:
      metric = SegmentationMetric(21)
      for pred, gt in pairs: metric.update(pred, gt)
      metric.iou(), metric.mean_iou(), metric.pixel_accuracy()
    """

    def __init__(self, num_classes=21):
        if int(num_classes) < 1:
            raise ValueError(f'num_classes must be >= 1, got {num_classes}')
        self.num_classes = int(num_classes)
        self.reset()

    def reset(self):
        """Clears the accumulated counts."""
        self.counts = np.zeros((self.num_classes, self.num_classes + 2), np.int64)
        self.num_images = 0

    def update(self, pred, target):
        """Adds one prediction / ground-truth pair (integer label maps of equal shape). Returns self."""
        pred_i = _as_integer_labels(pred, 'pred')
        target_i = _as_integer_labels(target, 'target')
        if pred_i is None or target_i is None:
            raise ValueError('SegmentationMetric.update needs integer-valued label maps')
        self.counts += pair_counts(pred_i, target_i, self.num_classes)
        self.num_images += 1
        return self

    def merge(self, other):
        """Adds the counts of another SegmentationMetric (e.g. from another worker). Returns self."""
        if other.num_classes != self.num_classes:
            raise ValueError(f'cannot merge metrics over {other.num_classes} and {self.num_classes} classes')
        self.counts += other.counts
        self.num_images += other.num_images
        return self

    def stats(self):
        """(tp_fn, tp_fp, tp) float64 [C], the dataset sums of `iou_stats`."""
        return tuple(x.astype(np.float64) for x in _stats_from_pair_counts(self.counts))

    def confusion_matrix(self):
        """int64 [C, C] (rows gt, cols pred), prediction == C folded into column C-1 like `confusion_matrix`."""
        matrix = self.counts[:, :self.num_classes].copy()
        matrix[:, -1] += self.counts[:, self.num_classes]
        return matrix

    def iou(self):
        """Per-class IoU in percent, float64 [C]."""
        return iou_from_stats(*self.stats())

    def mean_iou(self, skip_absent=False):
        """mIoU in percent; absent classes count 0 (original) unless `skip_absent`."""
        tp_fn, tp_fp, _ = self.stats()
        return mean_iou_from_iou(self.iou(), tp_fn, tp_fp, skip_absent=skip_absent)

    def pixel_accuracy(self):
        """`sum(tp) / (sum(tp_fp) + 1e-12)`, a fraction in [0, 1] (the original prints it with '%')."""
        _, tp_fp, tp = self.stats()
        return float(tp.sum() / (tp_fp.sum() + _EPS))

    def results(self, skip_absent=False):
        """Dict with tp_fn, tp_fp, tp, iou (percent [C]), mean_iou (percent), pixel_acc (fraction), num_images."""
        tp_fn, tp_fp, tp = self.stats()
        iou = iou_from_stats(tp_fn, tp_fp, tp)
        return {'tp_fn': tp_fn, 'tp_fp': tp_fp, 'tp': tp, 'iou': iou,
                'mean_iou': mean_iou_from_iou(iou, tp_fn, tp_fp, skip_absent=skip_absent),
                'pixel_acc': float(tp.sum() / (tp_fp.sum() + _EPS)), 'num_images': self.num_images}


def instance_counts(target, inst, num_classes=21, skip_void_instance=False):
    """Instances per class of one image, as `benchmark_by_instance.py` counts them.

    Each distinct value of `inst` is a region; its class is the most frequent ground-truth class inside it
    (targets outside [0, C-1] not counted; ties -> lowest class; a region with no valid pixel -> class 0).
    Faithful quirk: the original skips the region whose *index* in `np.unique(inst)` is 255 or more (only
    possible when all 256 values occur), so region 0 and the void region 255 are counted as instances.

    Args:
      target: integer ground-truth map [H, W].
      inst: integer instance-id map [H, W] (values 0..255 from a palette PNG).
      num_classes: C.
      skip_void_instance: fix for the quirk: do not count the region whose value is 255.
    Returns:
      float64 [C] instance counts.
    """
    _check_same_shape(target, inst)
    target_i = _as_integer_labels(target, 'target')
    inst_i = _as_integer_labels(inst, 'inst')
    if target_i is None or inst_i is None:
        raise ValueError('instance_counts needs integer-valued maps')
    inst_values, inst_index = np.unique(inst_i.ravel(), return_inverse=True)
    target_flat = target_i.ravel()
    valid = (target_flat >= 0) & (target_flat < num_classes)
    region_hist = np.bincount(inst_index[valid] * num_classes + target_flat[valid],
                              minlength=inst_values.size * num_classes).reshape(inst_values.size, num_classes)
    region_class = np.argmax(region_hist, axis=1)
    keep = np.arange(inst_values.size) < 255
    if skip_void_instance:
        keep &= inst_values != 255
    return np.bincount(region_class[keep], minlength=num_classes).astype(np.float64)


class InstanceSegmentationMetric:
    """Instance-weighted mIoU of `benchmark_by_instance.py`, accumulated over a split.

    Per image, IoU_c (fraction, from `iou_stats`) is weighted by the number of instances of class c in that
    image; the dataset IoU_c is `100 * sum(iou * ninst) / (sum(ninst) + 1e-12)` and mIoU their sum / C.
    """

    def __init__(self, num_classes=21, skip_void_instance=False):
        self.num_classes = int(num_classes)
        self.skip_void_instance = skip_void_instance
        self.reset()

    def reset(self):
        """Clears the accumulated sums."""
        self.weighted_iou = np.zeros(self.num_classes, np.float64)
        self.ninst = np.zeros(self.num_classes, np.float64)
        self.num_images = 0

    def update(self, pred, target, inst):
        """Adds one (prediction, ground truth, instance map) triple of equal shapes. Returns self."""
        tp_fn, tp_fp, tp = iou_stats(pred, target, self.num_classes)
        ninst = instance_counts(target, inst, self.num_classes, self.skip_void_instance)
        image_iou = tp / (tp_fn + tp_fp - tp + _EPS)
        self.weighted_iou += image_iou * ninst
        self.ninst += ninst
        self.num_images += 1
        return self

    def iou(self):
        """Per-class instance-weighted IoU in percent, float64 [C]."""
        return self.weighted_iou / (self.ninst + _EPS) * 100

    def mean_iou(self):
        """Sum of `iou()` / C, percent (classes without instances count 0, as in the original)."""
        return float(self.iou().sum() / self.num_classes)

    def results(self):
        """Dict with iou (percent [C]), mean_iou (percent), ninst (float64 [C]), num_images."""
        iou = self.iou()
        return {'iou': iou, 'mean_iou': float(iou.sum() / self.num_classes), 'ninst': self.ninst.copy(),
                'num_images': self.num_images}
