"""Cityscapes id conversions: trainId predictions -> labelIds for the official evaluator / test server
(AAF `pyscripts/utils/encode_cityscapes_testid.py`) and the labelId -> trainId table for ground truth.

    python -m common.eval.cityscapes --pred-dir results/val/gray/ --save-dir results/val/labelIds/

Every file under --pred-dir (recursively) is read with PIL `convert('L')`, converted and written under --save-dir
at the same relative path (mode 'L'; atomic write). trainIds 0..18 become labelIds
7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33; every other value (255 included)
becomes 0 ('unlabeled', ignored by the evaluator).
"""
import os
import sys

import numpy as np
from absl import app, flags

# The id tables live in common.data.datasets (one table for the project); re-exported here as sequences.
from common.data.datasets import (CITYSCAPES_LABELID_TO_TRAINID, CITYSCAPES_TRAINID_TO_LABELID,
                                  cityscapes_label_lut)
from common.io import save_png

# trainId -> labelId (index = trainId), as the original TRANSFORM_TB.
TRAINID_TO_LABELID = tuple(CITYSCAPES_TRAINID_TO_LABELID)

# labelId 0..33 -> trainId (index = labelId); 255 = void / ignoreInEval (cityscapesScripts `labels.py`).
# Licence plate (labelId -1, trainId -1) cannot occur in uint8 label PNGs and is not listed.
LABELID_TO_TRAINID = tuple(CITYSCAPES_LABELID_TO_TRAINID[label_id] for label_id in range(34))

CITYSCAPES_IGNORE_LABEL = 255


def encode_cityscapes_testid(pred):
    """trainId label map -> labelId label map (the original script's conversion).

    Args:
      pred: integer array [H, W] (any shape) of trainIds; values outside 0..18 (e.g. 255) become 0.
    Returns:
      uint8 array of the same shape.
    """
    pred = np.asarray(pred)
    out = np.zeros(pred.shape, np.uint8)
    table = np.asarray(TRAINID_TO_LABELID, np.uint8)
    known = (pred >= 0) & (pred < len(table))
    out[known] = table[pred[known].astype(np.int64)]
    return out


def label_ids_to_train_ids(label_map, ignore_label=CITYSCAPES_IGNORE_LABEL):
    """labelId map (gtFine `*_labelIds.png`) -> trainId map; void ids and values > 33 become `ignore_label`.

    Args:
      label_map: integer array (any shape) of labelIds 0..33.
      ignore_label: value for void classes (default 255).
    Returns:
      uint8 array of the same shape.
    """
    label_map = np.asarray(label_map)
    table = cityscapes_label_lut()
    table[table == 255] = ignore_label
    out = np.full(label_map.shape, ignore_label, np.uint8)
    known = (label_map >= 0) & (label_map < 256)
    out[known] = table[label_map[known].astype(np.int64)]
    return out


def save_label_png(label, path):
    """Writes a uint8 [H, W] label map as a mode-'L' PNG at `path`, atomically."""
    save_png(path, np.asarray(label, np.uint8), 'L')


def encode_dir(pred_dir, save_dir, show_progress=False):
    """Converts every trainId image under `pred_dir` to labelIds under `save_dir` (same relative paths).

    Args:
      pred_dir: directory walked recursively; every file is read with PIL convert('L').
      save_dir: output root (created if needed).
      show_progress: tqdm bar on stderr.
    Returns:
      list of written paths.
    """
    from PIL import Image
    from tqdm import tqdm
    from common.eval.benchmark import list_prediction_files
    if not save_dir:
        raise ValueError('--save_dir: must be given')
    prednames = list_prediction_files(pred_dir)
    written = []
    for predname in tqdm(prednames, desc='encode', unit='img', disable=not show_progress, file=sys.stderr):
        try:
            with Image.open(predname) as image:
                pred = np.asarray(image.convert(mode='L'), dtype=np.uint8)
        except OSError as error:
            raise OSError(f'cannot read prediction image {predname!r}: {error}') from error
        out_name = os.path.join(save_dir, os.path.relpath(predname, pred_dir))
        save_label_png(encode_cityscapes_testid(pred), out_name)
        written.append(out_name)
    return written


FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    """Defines this CLI's flags (called by `run`, not at import)."""
    from common.eval.benchmark import define_flag_once
    define_flag_once('string', 'pred_dir', '', 'Directory of trainId prediction images (walked recursively).',
                     flag_values)
    define_flag_once('string', 'save_dir', '', 'Output directory for the labelId images.', flag_values)
    define_flag_once('bool', 'progress', True, 'Show a tqdm progress bar on stderr.', flag_values)


def main(argv):
    """absl main: encodes --pred_dir into --save_dir."""
    if len(argv) > 1:
        raise app.UsageError(f'unexpected positional arguments: {argv[1:]}')
    encode_dir(FLAGS.pred_dir, FLAGS.save_dir, show_progress=FLAGS.progress)


def run(argv=None):
    """Console-script entry point (hyphenated or underscored flags)."""
    from common.cli import run_app
    define_flags()
    run_app(main, argv)


if __name__ == '__main__':
    run()
