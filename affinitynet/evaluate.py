"""mIoU of PSA outputs over a list: label PNGs (CAM predictions, random-walk labels, DeepLab results) or CAM
dictionaries with a sweep of the background score, printed as a table and plotted as a PNG curve.

    python -m affinitynet.evaluate --list voc12/train.txt --voc12_root VOC2012 --pred_dir rw
    python -m affinitynet.evaluate --list voc12/train.txt --voc12_root VOC2012 --cam_dir cam \\
        --sweep threshold --values 0.05,0.1,0.15,0.2,0.25,0.3 --out_dir eval_cam

`--sweep threshold`: background = a constant score t (infer_cls --out_cam_pred uses 0.2);
`--sweep alpha`: background = (1 - max CAM)^alpha (the la/ha/random-walk background).
"""
import os

import numpy as np
from absl import app, flags
from PIL import Image

from affinitynet import cam as cam_lib
from affinitynet import runtime
from common.colormap import VOC_CLASS_NAMES
from common.eval.metrics import SegmentationMetric
from common.io import atomic_write_text, check_output_flags

FLAGS = flags.FLAGS
SWEEPS = ('threshold', 'alpha')
DEFAULT_VALUES = {'threshold': '0.05,0.1,0.15,0.2,0.25,0.3,0.35,0.4,0.5,0.6', 'alpha': '1,2,4,8,16,24,32'}


def read_label(path, what='label'):
    """Raw uint8 indices of a label PNG ('L' or palette); a missing file is named."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{what} file not found: {path}')
    with Image.open(path) as handle:
        return np.array(handle)


def cam_labels(cam_dict, sweep, value, image_size=None):
    """Label map of a CAM dict with a background threshold or alpha (0 = background, c+1 = class c)."""
    keys, values = cam_lib.from_dict(cam_dict)
    if values is None:
        return np.zeros(image_size, np.uint8)
    if sweep == 'threshold':
        bg = np.full(values.shape[:2] + (1,), value, np.float32)
    else:
        bg = np.power(1 - np.max(values, axis=-1, keepdims=True), np.float32(value))
    index = np.argmax(np.concatenate([bg, values], -1), -1)
    return np.concatenate([[0], keys + 1]).astype(np.uint8)[index]


def evaluate_pred_dir(names, pred_dir, gt_dir, num_classes=21):
    """SegmentationMetric over `names` of label PNGs in pred_dir against gt_dir."""
    metric = SegmentationMetric(num_classes)
    for name in names:
        gt = read_label(os.path.join(gt_dir, name + '.png'), 'ground-truth')
        pred = read_label(os.path.join(pred_dir, name + '.png'), 'prediction')
        if pred.shape != gt.shape:
            raise ValueError(f'prediction {os.path.join(pred_dir, name + ".png")} is {pred.shape}, ground truth '
                             f'{gt.shape}')
        metric.update(pred, gt)
    return metric


def sweep_cam_dir(names, cam_dir, gt_dir, sweep, values, num_classes=21):
    """{value: SegmentationMetric} of CAM dicts under each background value."""
    metrics = {v: SegmentationMetric(num_classes) for v in values}
    for name in runtime.progress(names, desc='evaluate'):
        gt = read_label(os.path.join(gt_dir, name + '.png'), 'ground-truth')
        cam_path = os.path.join(cam_dir, name + '.npy')
        cam_dict = cam_lib.load_dict(cam_path, 'CAM')
        for v in values:
            pred = cam_labels(cam_dict, sweep, v, gt.shape)
            if pred.shape != gt.shape:
                raise ValueError(f'CAM {cam_path} is {pred.shape}, its ground truth {gt.shape}')
            metrics[v].update(pred, gt)
    return metrics


def format_sweep(sweep, metrics):
    """Markdown table value | mIoU | pixel accuracy, best row marked."""
    best = max(metrics, key=lambda v: metrics[v].mean_iou())
    lines = [f'| {sweep} | mIoU (%) | pixel acc. (%) |', '|---|---|---|']
    for v, m in metrics.items():
        mark = ' (best)' if v == best else ''
        lines.append(f'| {v:g}{mark} | {m.mean_iou():.2f} | {100 * m.pixel_accuracy():.2f} |')
    return '\n'.join(lines)


def format_classes(metric):
    iou = metric.iou()
    return '\n'.join(f'{VOC_CLASS_NAMES[c]:>12s} {iou[c]:6.2f}' for c in range(len(iou)))


def plot_sweep(path, sweep, metrics):
    """mIoU against the swept value as a PNG."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import io
    from common.io import atomic_write_bytes
    values = list(metrics)
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    ax.plot(values, [metrics[v].mean_iou() for v in values], marker='o')
    ax.set_xlabel('background threshold' if sweep == 'threshold' else 'background power alpha')
    ax.set_ylabel('mIoU (%)')
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png')
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def define_flags(flag_values=FLAGS):
    flags.DEFINE_string('list', 'voc12/train.txt', 'PSA list of the images.', flag_values=flag_values)
    flags.DEFINE_string('voc12_root', None, 'VOC2012 directory.', flag_values=flag_values)
    flags.DEFINE_string('gt_dir', None, 'Ground truth PNGs (default <voc12_root>/SegmentationClassAug, else '
                        'SegmentationClass).', flag_values=flag_values)
    flags.DEFINE_string('pred_dir', None, 'Label PNGs to evaluate.', flag_values=flag_values)
    flags.DEFINE_string('cam_dir', None, 'CAM dicts to evaluate with a background sweep.', flag_values=flag_values)
    flags.DEFINE_enum('sweep', 'threshold', SWEEPS, 'Background of --cam_dir: constant threshold or alpha power.',
                      flag_values=flag_values)
    flags.DEFINE_string('values', None, 'Comma-separated sweep values.', flag_values=flag_values)
    flags.DEFINE_string('out_dir', None, 'Writes sweep.md and sweep.png (or result.md) here.',
                        flag_values=flag_values)


def default_gt_dir(voc12_root):
    aug = os.path.join(voc12_root, 'SegmentationClassAug')
    return aug if os.path.isdir(aug) else os.path.join(voc12_root, 'SegmentationClass')


def main(argv, flag_values=FLAGS):
    del argv
    f = flag_values
    if bool(f.pred_dir) == bool(f.cam_dir):
        raise app.UsageError('give exactly one of --pred_dir and --cam_dir')
    if not f.gt_dir and not f.voc12_root:
        raise app.UsageError('--gt_dir or --voc12_root: required')
    gt_dir = f.gt_dir or default_gt_dir(f.voc12_root)
    names = runtime.image_ids(f.list, '--list')
    check_output_flags(f, 'out_dir')
    if f.pred_dir:
        metric = evaluate_pred_dir(names, f.pred_dir, gt_dir)
        text = f'{format_classes(metric)}\nmIoU: {metric.mean_iou():.2f}'
        print(text)
        if f.out_dir:
            atomic_write_text(os.path.join(f.out_dir, 'result.md'), text + '\n')
        return
    try:
        values = [float(v) for v in (f.values or DEFAULT_VALUES[f.sweep]).split(',')]
    except ValueError as error:
        raise app.UsageError(f'--values: comma-separated numbers expected, got {f.values!r}') from error
    metrics = sweep_cam_dir(names, f.cam_dir, gt_dir, f.sweep, values)
    table = format_sweep(f.sweep, metrics)
    print(table)
    if f.out_dir:
        atomic_write_text(os.path.join(f.out_dir, 'sweep.md'), table + '\n')
        plot_sweep(os.path.join(f.out_dir, 'sweep.png'), f.sweep, metrics)


def run():
    from common.cli import run_app
    define_flags()
    run_app(main)


if __name__ == '__main__':
    run()
