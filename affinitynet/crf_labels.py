"""Dense-CRF refinement of label PNGs (the DeepLab stage's "inference with CRF").

    python -m affinitynet.crf_labels --image_dir VOC2012/JPEGImages --label_dir results/gray --out_dir results/crf

The segmentation programs write hard labels, so the unary is built from them: probability `--gt_prob` on the
predicted class, the rest spread over the other classes (pydensecrf's `unary_from_labels` idea), then PSA's CRF
(Gaussian 3/3, bilateral 80/13/10, 10 iterations). Existing outputs are skipped; files are written atomically.
"""
import os

import numpy as np
from absl import app, flags
from PIL import Image

from common import crf
from common.io import save_png

FLAGS = flags.FLAGS


def refine_labels(img, label, num_classes=21, gt_prob=0.7, ignore_label=255):
    """CRF-refined uint8 labels of one image. img uint8 [H, W, 3]; label uint8 [H, W]."""
    label = np.asarray(label)
    if label.shape != img.shape[:2]:
        raise ValueError(f'label size {label.shape} differs from image size {img.shape[:2]}')
    probs = np.full((num_classes,) + label.shape, (1 - gt_prob) / (num_classes - 1), np.float32)
    valid = label < num_classes
    ys, xs = np.nonzero(valid)
    probs[label[valid].astype(np.int64), ys, xs] = gt_prob
    probs[:, ~valid] = 1. / num_classes
    marginals = crf.crf_inference(np.ascontiguousarray(img), probs, labels=num_classes)
    return np.argmax(marginals, axis=0).astype(np.uint8)


def define_flags(flag_values=FLAGS):
    flags.DEFINE_string('image_dir', None, 'Folder of <name>.jpg images.', flag_values=flag_values)
    flags.DEFINE_string('label_dir', None, 'Folder of <name>.png labels.', flag_values=flag_values)
    flags.DEFINE_string('out_dir', None, 'Output folder.', flag_values=flag_values)
    flags.DEFINE_integer('num_classes', 21, 'Classes.', flag_values=flag_values)
    flags.DEFINE_float('gt_prob', 0.7, 'Probability given to the predicted class.', flag_values=flag_values)


def main(argv, flag_values=FLAGS):
    del argv
    f = flag_values
    for required in ('image_dir', 'label_dir', 'out_dir'):
        if not f[required].value:
            raise app.UsageError(f'--{required}: required')
    from affinitynet.runtime import progress
    names = sorted(n[:-4] for n in os.listdir(f.label_dir) if n.endswith('.png'))
    todo = [n for n in names if not os.path.isfile(os.path.join(f.out_dir, n + '.png'))]
    for name in progress(todo, desc='crf'):
        path = os.path.join(f.image_dir, name + '.jpg')
        if not os.path.isfile(path):
            raise FileNotFoundError(f'image of label {name}.png not found: {path}')
        with Image.open(path) as handle:
            img = np.array(handle.convert('RGB'))
        with Image.open(os.path.join(f.label_dir, name + '.png')) as handle:
            label = np.array(handle)
        save_png(os.path.join(f.out_dir, name + '.png'), refine_labels(img, label, f.num_classes, f.gt_prob))


def run():
    from common.cli import run_app
    define_flags()
    run_app(main)


if __name__ == '__main__':
    run()
