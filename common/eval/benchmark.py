"""mIoU benchmark of prediction PNGs against ground-truth PNGs (AAF/SegSort `benchmark_by_mIoU.py` and
`benchmark_by_instance.py`).

    python -m common.eval.benchmark --pred-dir results/val/gray/ --gt-dir VOC2012/segcls/ --num-classes 21
    python -m common.eval.benchmark --pred_dir P --gt_dir G --inst_dir VOC2012/SegmentationObject/

Hyphenated (AAF) and underscored (SegSort) flag spellings are both accepted. Every file under --pred-dir is
read (recursively); its ground truth is `predname.replace(pred_dir, gt_dir)` followed by the --string-replace
substitution, exactly as the originals map paths. Predictions and ground truths are read with PIL
`convert('L')`, instance maps with `convert('P')`. The printed table equals the originals' output; with
--inst-dir the instance-wise table of `benchmark_by_instance.py` is printed instead.

From Python, `evaluate_dirs(pred_dir, gt_dir, num_classes)` returns the numbers.
"""
import os
import sys

import numpy as np
from absl import app, flags

from common.colormap import CITYSCAPES_CLASS_NAMES
from common.eval.metrics import InstanceSegmentationMetric, SegmentationMetric

# Names the original scripts print (for every dataset, Cityscapes included).
BENCHMARK_VOC_CLASS_NAMES = ('Background', 'Aero', 'Bike', 'Bird', 'Boat', 'Bottle', 'Bus', 'Car', 'Cat', 'Chair',
                             'Cow', 'Table', 'Dog', 'Horse', 'MBike', 'Person', 'Plant', 'Sheep', 'Sofa', 'Train',
                             'TV')

_CLASS_NAME_SETS = {'voc': BENCHMARK_VOC_CLASS_NAMES, 'cityscapes': CITYSCAPES_CLASS_NAMES}


FLAGS = flags.FLAGS


def define_flag_once(kind, name, default, help_text, flag_values=FLAGS, **kwargs):
    """`flags.DEFINE_<kind>` unless a flag of that name exists (CLIs sharing a process share flag names)."""
    if name not in flag_values:
        getattr(flags, 'DEFINE_' + kind)(name, default, help=help_text, flag_values=flag_values, **kwargs)


def define_flags(flag_values=FLAGS):
    """Defines this CLI's flags (called by `run`; not at import, so importing this module defines no flags)."""
    define_flag_once('string', 'pred_dir', '', 'Directory of prediction label PNGs (walked recursively).',
                     flag_values)
    define_flag_once('string', 'gt_dir', '', 'Directory of ground-truth label PNGs.', flag_values)
    define_flag_once('integer', 'num_classes', 21, 'Number of classes.', flag_values)
    define_flag_once('string', 'string_replace', ',', "'a,b': replace a with b in the ground-truth (and instance) "
                     "path; '' or ',' = no replacement.", flag_values)
    define_flag_once('string', 'inst_dir', '', 'Directory of instance-id PNGs; if set, prints the instance-wise '
                     'mIoU of benchmark_by_instance.py.', flag_values)
    define_flag_once('enum', 'class_names', 'voc', 'Class names to print (the originals always print the VOC '
                     'names).', flag_values, enum_values=sorted(_CLASS_NAME_SETS))
    define_flag_once('bool', 'skip_absent', False, 'Average mIoU over classes present in gt or prediction only '
                     '(original: absent classes count as 0 and the sum is divided by num_classes).', flag_values)
    define_flag_once('bool', 'skip_void_instance', False, 'Instance mIoU: do not count the region of value 255 '
                     'as an instance (original: counts it, see metrics.instance_counts).', flag_values)
    define_flag_once('bool', 'progress', True, 'Show a tqdm progress bar on stderr.', flag_values)


def _parse_string_replace(string_replace):
    """'a,b' -> ('a', 'b'); '' -> None (no replacement)."""
    if string_replace == '':
        return None
    parts = string_replace.split(',')
    if len(parts) != 2:
        raise ValueError(f"--string_replace must be 'old,new' (one comma), got {string_replace!r}")
    return parts[0], parts[1]


def _mapped_path(predname, pred_dir, other_dir, replacement):
    """The originals' path mapping: replace the pred dir prefix (every occurrence), then the string pair."""
    name = predname.replace(pred_dir, other_dir)
    if replacement is not None:
        name = name.replace(*replacement)
    return name


def list_prediction_files(pred_dir):
    """Every file under `pred_dir`, recursively, in sorted order (the originals walk all files)."""
    if not pred_dir or not os.path.isdir(pred_dir):
        raise NotADirectoryError(f'--pred_dir: not a directory: {pred_dir!r}')
    names = []
    for dirpath, dirnames, filenames in os.walk(pred_dir):
        dirnames.sort()
        names.extend(os.path.join(dirpath, f) for f in sorted(filenames))
    if not names:
        raise ValueError(f'--pred_dir: no prediction files found under {pred_dir!r}')
    return names


def _read_label_png(path, mode, role, predname):
    from PIL import Image
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{role} file {path!r} not found for prediction {predname!r}')
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert(mode=mode), dtype=np.uint8)
    except OSError as error:
        raise OSError(f'cannot read {role} image {path!r}: {error}') from error


def evaluate_dirs(pred_dir, gt_dir, num_classes=21, string_replace=',', inst_dir='', skip_absent=False,
                  skip_void_instance=False, show_progress=False):
    """Benchmarks every prediction under `pred_dir` against its ground truth, accumulating over the split.

    Args:
      pred_dir: directory of prediction label images (trainIds / class indices), walked recursively.
      gt_dir: ground-truth directory; path = predname.replace(pred_dir, gt_dir) then string_replace.
      num_classes: C.
      string_replace: 'old,new' applied to ground-truth (and instance) paths; '' or ',' for none.
      inst_dir: optional instance-id directory (same path mapping); adds the instance-wise metrics.
      skip_absent: mIoU over present classes only (default: original, absent classes count 0).
      skip_void_instance: instance mIoU ignores the region of value 255 (default: original counts it).
      show_progress: tqdm bar on stderr.
    Returns:
      dict: 'iou' float64 [C] per-class IoU in percent, 'mean_iou' (percent), 'pixel_acc' (fraction),
      'tp_fn', 'tp_fp', 'tp' (float64 [C] sums), 'num_images'; with inst_dir also 'instance_iou' [C] percent,
      'instance_mean_iou' (percent) and 'ninst' [C].
    Raises:
      NotADirectoryError / ValueError / FileNotFoundError naming the offending flag or files.
    """
    from tqdm import tqdm
    if not gt_dir or not os.path.isdir(gt_dir):
        raise NotADirectoryError(f'--gt_dir: not a directory: {gt_dir!r}')
    if inst_dir and not os.path.isdir(inst_dir):
        raise NotADirectoryError(f'--inst_dir: not a directory: {inst_dir!r}')
    replacement = _parse_string_replace(string_replace)
    prednames = list_prediction_files(pred_dir)
    metric = SegmentationMetric(num_classes)
    inst_metric = InstanceSegmentationMetric(num_classes, skip_void_instance) if inst_dir else None
    for predname in tqdm(prednames, desc='benchmark', unit='img', disable=not show_progress, file=sys.stderr):
        gtname = _mapped_path(predname, pred_dir, gt_dir, replacement)
        pred = _read_label_png(predname, 'L', 'prediction', predname)
        gt = _read_label_png(gtname, 'L', 'ground-truth', predname)
        if pred.shape != gt.shape:
            raise ValueError(f'prediction {predname!r} has shape {pred.shape} but ground truth {gtname!r} has '
                             f'shape {gt.shape}')
        metric.update(pred, gt)
        if inst_metric is not None:
            instname = _mapped_path(predname, pred_dir, inst_dir, replacement)
            inst = _read_label_png(instname, 'P', 'instance', predname)
            if inst.shape != gt.shape:
                raise ValueError(f'instance map {instname!r} has shape {inst.shape}, expected {gt.shape}')
            inst_metric.update(pred, gt, inst)
    result = metric.results(skip_absent=skip_absent)
    if inst_metric is not None:
        inst_result = inst_metric.results()
        result.update(instance_iou=inst_result['iou'], instance_mean_iou=inst_result['mean_iou'],
                      ninst=inst_result['ninst'])
    return result


def format_table(iou, mean_iou, pixel_acc=None, class_names='voc'):
    """The originals' printout: one 'class <name>: <i>, acc: <iou>%' line per class, then the means.

    Args:
      iou: per-class IoU in percent [C].
      mean_iou: percent.
      pixel_acc: fraction, printed with '%' as the original does (None: line omitted, as
        benchmark_by_instance.py).
      class_names: 'voc' (the originals' names, used by them for every dataset), 'cityscapes', or a sequence.
        Classes beyond the list are not printed (as SegSort's copy; AAF's would raise IndexError).
    Returns:
      str ending with a newline.
    """
    names = _CLASS_NAME_SETS[class_names] if isinstance(class_names, str) else tuple(class_names)
    lines = []
    for i, value in enumerate(np.asarray(iou)):
        if i >= len(names):
            break
        lines.append('class {:10s}: {:02d}, acc: {:4.4f}%'.format(names[i], i, value))
    lines.append('mean IOU: {:4.4f}%'.format(mean_iou))
    if pixel_acc is not None:
        lines.append('mean Pixel Acc: {:4.4f}%'.format(pixel_acc))
    return '\n'.join(lines) + '\n'


def benchmark_from_flags():
    """Runs `evaluate_dirs` with the parsed flags, prints the originals' table and returns the result dict."""
    result = evaluate_dirs(FLAGS.pred_dir, FLAGS.gt_dir, FLAGS.num_classes, FLAGS.string_replace, FLAGS.inst_dir,
                           skip_absent=FLAGS.skip_absent, skip_void_instance=FLAGS.skip_void_instance,
                           show_progress=FLAGS.progress)
    if FLAGS.inst_dir:
        text = format_table(result['instance_iou'], result['instance_mean_iou'], None, FLAGS.class_names)
    else:
        text = format_table(result['iou'], result['mean_iou'], result['pixel_acc'], FLAGS.class_names)
    sys.stdout.write(text)
    sys.stdout.flush()
    return result


def main(argv):
    """absl main: benchmarks --pred_dir against --gt_dir and prints the table (returns None: exit code 0)."""
    if len(argv) > 1:
        raise app.UsageError(f'unexpected positional arguments: {argv[1:]}')
    benchmark_from_flags()


def run(argv=None):
    """Console-script entry point (hyphenated or underscored flags)."""
    from common.cli import run_app
    define_flags()
    run_app(main, argv)


if __name__ == '__main__':
    run()
