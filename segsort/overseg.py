"""Over-segmentations for unsupervised SegSort without MATLAB (substitute for the HED-owt-ucm masks).

    python -m segsort.overseg --method slic --data_dir VOCdevkit/ --data_list dataset/voc12/train+.txt

The original trains `train_segsort_unsup.py` on HED contour detections turned into regions by owt-ucm (MATLAB).
This program writes scikit-image over-segmentations (SLIC superpixels or Felzenszwalb's graph segmentation) in the
same format: 8-bit grayscale PNGs of region ids 0..254 (255 stays free: it is the reader's crop padding), at the
path the unsupervised reader expects, `label.replace('segcls', 'hed')` below --data_dir, or with `--hed_dir DIR`
at `DIR/<label file name>` (the Q-S2 fix, pass the same --hed_dir to segsort.train_unsup). Lines whose label path
contains no 'segcls' (SBD lines of train+.txt) would map onto the label itself: they are refused unless --hed_dir
is given. These regions are a substitute, not a reproduction: HED-owt-ucm follows learned object contours, SLIC /
Felzenszwalb follow colour.
"""
import os

import numpy as np
from absl import flags

from common.cli import run_app
from common.data.lists import read_unsup_labeled_image_list
from common.io import save_png

FLAGS = flags.FLAGS
METHODS = ('slic', 'felzenszwalb')
MAX_REGIONS = 255


def define_flags(flag_values=FLAGS):
    fv = dict(flag_values=flag_values)
    flags.DEFINE_enum('method', 'slic', list(METHODS), 'scikit-image over-segmentation.', **fv)
    flags.DEFINE_string('data_dir', '', 'Prefix joined to the list entries by plain concatenation.', **fv)
    flags.DEFINE_string('data_list', '', 'List file of "<image> <label>" lines (the training list).', **fv)
    flags.DEFINE_string('hed_dir', '', 'Write DIR/<label file name> instead of label.replace("segcls", "hed").',
                        **fv)
    flags.DEFINE_integer('slic_segments', 64, 'SLIC: approximate number of superpixels (<= 255).', **fv)
    flags.DEFINE_float('slic_compactness', 10.0, 'SLIC: colour vs space trade-off.', **fv)
    flags.DEFINE_float('felzenszwalb_scale', 100.0, 'Felzenszwalb: larger = larger regions.', **fv)
    flags.DEFINE_float('felzenszwalb_sigma', 0.8, 'Felzenszwalb: Gaussian pre-smoothing.', **fv)
    flags.DEFINE_integer('felzenszwalb_min_size', 50, 'Felzenszwalb: minimum region size (raised per image so '
                         'that at most 255 regions remain).', **fv)
    flags.DEFINE_boolean('overwrite', True, 'Rewrite masks that already exist.', **fv)
    flags.DEFINE_boolean('progress', True, 'Show a progress bar.', **fv)


def over_segment(image, method='slic', slic_segments=64, slic_compactness=10.0, felzenszwalb_scale=100.0,
                 felzenszwalb_sigma=0.8, felzenszwalb_min_size=50):
    """Region ids of an RGB image.

    Args:
      image: uint8 [H, W, 3].
      method: 'slic' or 'felzenszwalb'.
    Returns:
      uint8 [H, W], ids 0..K-1 with K <= 255, numbered in raster order of first appearance.
    """
    from skimage.segmentation import felzenszwalb, slic
    image = np.asarray(image)
    if method == 'slic':
        if not 1 <= slic_segments <= MAX_REGIONS:
            raise ValueError(f'--slic_segments must be in [1, {MAX_REGIONS}], got {slic_segments}')
        regions = slic(image, n_segments=slic_segments, compactness=slic_compactness, start_label=0)
    elif method == 'felzenszwalb':
        min_size = max(int(felzenszwalb_min_size), 1)
        while True:
            regions = felzenszwalb(image, scale=felzenszwalb_scale, sigma=felzenszwalb_sigma, min_size=min_size)
            if regions.max() < MAX_REGIONS:
                break
            min_size *= 2
    else:
        raise ValueError(f'--method must be one of {METHODS}, got {method!r}')
    _, first, inverse = np.unique(regions.ravel(), return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))  # ids in raster order of first appearance
    ids = rank[inverse].reshape(regions.shape)
    if ids.max() >= MAX_REGIONS:  # SLIC may exceed n_segments slightly
        ids = np.minimum(ids, MAX_REGIONS - 1)
    return ids.astype(np.uint8)


def output_paths(data_dir, data_list, hed_dir=''):
    """(image, over-segmentation) path pairs of a list; refuses paths that would overwrite the labels (Q-S2)."""
    images, labels, segs = read_unsup_labeled_image_list(data_dir, data_list, hed_dir or None)
    pairs = []
    for line_no, (image, label, seg) in enumerate(zip(images, labels, segs), 1):
        if os.path.abspath(seg) == os.path.abspath(label):
            raise ValueError(f'{data_list} line {line_no}: label path {label} contains no "segcls", so the '
                             f'original HED path would be the label itself (Q-S2); pass --hed_dir')
        pairs.append((image, seg))
    return pairs


def main_from_flags(cfg):
    """Writes every mask of the list; returns the number written."""
    if not cfg.data_list:
        raise ValueError('--data_list is required')
    if not os.path.isfile(cfg.data_list):
        raise FileNotFoundError(f'--data_list: list file not found: {cfg.data_list}')
    from PIL import Image
    from tqdm import tqdm
    written = 0
    for image_path, seg_path in tqdm(output_paths(cfg.data_dir, cfg.data_list, cfg.hed_dir), desc=cfg.method,
                                     disable=not cfg.progress):
        if not cfg.overwrite and os.path.isfile(seg_path):
            continue
        if not os.path.isfile(image_path):
            raise FileNotFoundError(f'{cfg.data_list}: image file not found: {image_path}')
        image = np.asarray(Image.open(image_path).convert('RGB'))
        ids = over_segment(image, cfg.method, cfg.slic_segments, cfg.slic_compactness, cfg.felzenszwalb_scale,
                           cfg.felzenszwalb_sigma, cfg.felzenszwalb_min_size)
        save_png(seg_path, ids, 'L')
        written += 1
    return written


def run():
    """Console script `segsort-overseg`."""
    define_flags()

    def main(argv):
        del argv
        count = main_from_flags(FLAGS)
        print(f'wrote {count} {FLAGS.method} over-segmentations')

    run_app(main)


if __name__ == '__main__':
    run()
