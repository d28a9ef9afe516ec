"""On-disk layouts of VOC 2012 (+SBD), Cityscapes and GTA5, label mappings and AAF-form list builders.

AAF/SegSort list lines are `<image> <label>` relative to a data root (passed as `data_dir`, with a trailing '/'):

* VOC (root = `VOCdevkit/`): `VOC2012/JPEGImages/<id>.jpg VOC2012/segcls/<id>.png` (8-bit GRAYSCALE class-index PNGs,
  0..20, 255 void) or `... sbd/dataset/clsimg/<id>.png` (SBD masks as PNG). The palette `SegmentationClass(Aug)` PNGs
  of VOC / PSA must be read as raw palette indices (pipeline `label_decoder='palette'`), or converted once to
  grayscale `segcls` PNGs with `convert_palette_labels`.
* Cityscapes (root = `Cityscapes/`): `leftImg8bit/<split>/<city>/<name>_leftImg8bit.png` +
  `gtFineId/<split>/<city>/<name>_gtFineId_labelIds.png` holding trainIds 0..18/255 despite the name (the originals'
  layout; made from the official `gtFine/*_gtFine_labelIds.png` by `convert_cityscapes_labels`), or the official
  labelIds read with `label_map=cityscapes_label_lut()`.
* GTA5 (root = `GTA5/`): `images/<n>.png` + `labels/<n>.png` (palette PNGs whose indices are Cityscapes labelIds ->
  `label_decoder='palette', label_map=cityscapes_label_lut()`).
"""
import glob
import os

import numpy as np

from common.data.lists import write_image_list
from common.io import save_png

IGNORE_LABEL = 255

# Cityscapes labelId -> trainId, ids 0..33 of the official label table (cityscapesscripts/helpers/labels.py);
# license plate (-1) never occurs in labelId PNGs. Every other value maps to 255.
CITYSCAPES_LABELID_TO_TRAINID = {
    0: 255, 1: 255, 2: 255, 3: 255, 4: 255, 5: 255, 6: 255, 7: 0, 8: 1, 9: 255, 10: 255, 11: 2, 12: 3, 13: 4,
    14: 255, 15: 255, 16: 255, 17: 5, 18: 255, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13, 27: 14,
    28: 15, 29: 255, 30: 255, 31: 16, 32: 17, 33: 18,
}
# trainId 0..18 -> labelId (AAF encode_cityscapes_testid.py).
CITYSCAPES_TRAINID_TO_LABELID = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)

# name -> settings a CLI needs to read the data set with `common.data.pipeline`.
DATASETS = {
    'voc12': dict(num_classes=21, ignore_label=IGNORE_LABEL, label_decoder='png', label_map=None, colormap='voc'),
    'voc12_palette': dict(num_classes=21, ignore_label=IGNORE_LABEL, label_decoder='palette', label_map=None,
                          colormap='voc'),
    'cityscapes': dict(num_classes=19, ignore_label=IGNORE_LABEL, label_decoder='png', label_map=None,
                       colormap='cityscapes'),
    'cityscapes_labelids': dict(num_classes=19, ignore_label=IGNORE_LABEL, label_decoder='png',
                                label_map='cityscapes', colormap='cityscapes'),
    'gta5': dict(num_classes=19, ignore_label=IGNORE_LABEL, label_decoder='palette', label_map='cityscapes',
                 colormap='cityscapes'),
}


def cityscapes_label_lut():
    """uint8 [256] lookup table labelId -> trainId (unlisted ids -> 255)."""
    lut = np.full(256, IGNORE_LABEL, np.uint8)
    for label_id, train_id in CITYSCAPES_LABELID_TO_TRAINID.items():
        lut[label_id] = train_id
    return lut


def get_label_map(name_or_table):
    """Resolves a `label_map` argument: None, 'cityscapes' or an explicit 256-entry table -> uint8 [256] or None."""
    if name_or_table is None:
        return None
    if isinstance(name_or_table, str):
        if name_or_table != 'cityscapes':
            raise ValueError(f"unknown label_map {name_or_table!r}; expected 'cityscapes' or a 256-entry table")
        return cityscapes_label_lut()
    table = np.asarray(name_or_table)
    if table.shape != (256,):
        raise ValueError(f'label_map table must have 256 entries, got shape {table.shape}')
    return table.astype(np.uint8)


def read_label_indices(path):
    """Raw class indices of a label PNG: palette ('P') indices or 8-bit grayscale values, uint8 [H, W].

    Raises:
      ValueError naming the file if the image is neither palette nor 8-bit grayscale.
    """
    from PIL import Image
    with Image.open(path) as im:
        if im.mode not in ('P', 'L'):
            raise ValueError(f'label image {path} has mode {im.mode}; expected a palette (P) or grayscale (L) PNG')
        return np.array(im, dtype=np.uint8)


def _progress(items, desc):
    from tqdm import tqdm
    return tqdm(items, desc=desc, unit='img', leave=False)


def read_ids(id_file):
    """Ids of a VOC ImageSets file (one id per line; blank lines skipped)."""
    with open(id_file) as f:
        ids = [line.strip().split(' ')[0] for line in f if line.strip()]
    if not ids:
        raise ValueError(f'id file {id_file} is empty')
    return ids


def convert_palette_labels(src_dir, dst_dir, ids=None, label_map=None):
    """Converts palette/grayscale label PNGs to grayscale class-index PNGs (e.g. SegmentationClass -> segcls).

    Args:
      src_dir: folder of `<id>.png` palette (or grayscale) labels.
      dst_dir: output folder (created); files written atomically.
      ids: ids to convert (default: every PNG in src_dir).
      label_map: optional mapping applied to the indices (see `get_label_map`).

    Returns:
      number of files written.
    """
    if ids is None:
        ids = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(src_dir, '*.png')))
    lut = get_label_map(label_map)
    for image_id in _progress(ids, 'labels'):
        labels = read_label_indices(os.path.join(src_dir, image_id + '.png'))
        save_png(os.path.join(dst_dir, image_id + '.png'), labels if lut is None else lut[labels], 'L')
    return len(ids)


def build_voc_list(ids, out_list, label_dir='VOC2012/segcls', image_dir='VOC2012/JPEGImages', with_labels=True):
    """Writes a VOC list in the originals' form, relative to the `VOCdevkit/` root.

    Args:
      ids: iterable of VOC ids (`2007_000032`) or a path of an id file.
      out_list: list file to write.
      label_dir: 'VOC2012/segcls', 'sbd/dataset/clsimg' or e.g. 'VOC2012/SegmentationClassAug' (then read with
        label_decoder='palette').
      image_dir: image folder relative to the root.
      with_labels: False writes single-column test lines.

    Returns:
      number of lines written.
    """
    if isinstance(ids, str):
        ids = read_ids(ids)
    rows = [(f'{image_dir}/{i}.jpg', f'{label_dir}/{i}.png') if with_labels else f'{image_dir}/{i}.jpg'
            for i in ids]
    return write_image_list(out_list, rows)


def _cityscapes_names(cityscapes_root, split):
    pattern = os.path.join(cityscapes_root, 'leftImg8bit', split, '*', '*_leftImg8bit.png')
    names = sorted(os.path.relpath(p, os.path.join(cityscapes_root, 'leftImg8bit', split)) for p in glob.glob(pattern))
    if not names:
        raise FileNotFoundError(f'no Cityscapes images match {pattern}')
    return [n[:-len('_leftImg8bit.png')] for n in names]  # '<city>/<name>'


def build_cityscapes_list(cityscapes_root, split, out_list, label_layout='gtFineId', with_labels=True):
    """Writes a Cityscapes list relative to the `Cityscapes/` root.

    Args:
      cityscapes_root: folder holding `leftImg8bit/` (and `gtFine/` / `gtFineId/`).
      split: 'train', 'val' or 'test'.
      out_list: list file to write.
      label_layout: 'gtFineId' (trainId PNGs, the originals' layout) or 'gtFine' (official labelIds; read them with
        label_map='cityscapes').
      with_labels: False writes single-column lines (test split).

    Returns:
      number of lines written.
    """
    suffix = {'gtFineId': '_gtFineId_labelIds.png', 'gtFine': '_gtFine_labelIds.png'}
    if label_layout not in suffix:
        raise ValueError(f"label_layout must be 'gtFineId' or 'gtFine', got {label_layout!r}")
    rows = []
    for name in _cityscapes_names(cityscapes_root, split):
        image = f'leftImg8bit/{split}/{name}_leftImg8bit.png'
        rows.append((image, f'{label_layout}/{split}/{name}{suffix[label_layout]}') if with_labels else image)
    return write_image_list(out_list, rows)


def convert_cityscapes_labels(cityscapes_root, split, flat_copy=True):
    """Official `gtFine/<split>/<city>/*_gtFine_labelIds.png` -> trainId PNGs in the originals' `gtFineId` layout.

    Writes `gtFineId/<split>/<city>/<name>_gtFineId_labelIds.png` and, with flat_copy, the benchmark's flattened
    `gtFineId/<split>/all/<name>_gtFineId_labelIds.png`.

    Returns:
      number of label images converted.
    """
    lut = cityscapes_label_lut()
    names = _cityscapes_names(cityscapes_root, split)
    for name in _progress(names, f'cityscapes {split}'):
        src = os.path.join(cityscapes_root, 'gtFine', split, name + '_gtFine_labelIds.png')
        if not os.path.isfile(src):
            raise FileNotFoundError(f'Cityscapes label not found: {src}')
        train_ids = lut[read_label_indices(src)]
        out_name = name + '_gtFineId_labelIds.png'
        save_png(os.path.join(cityscapes_root, 'gtFineId', split, out_name), train_ids, 'L')
        if flat_copy:
            save_png(os.path.join(cityscapes_root, 'gtFineId', split, 'all', os.path.basename(out_name)), train_ids,
                     'L')
    return len(names)


def build_gta5_list(gta5_root, out_list, names=None, label_dir='labels'):
    """Writes a GTA5 list `images/<n>.png labels/<n>.png` relative to the GTA5 root.

    Args:
      gta5_root: folder holding `images/` and `labels/`.
      out_list: list file to write.
      names: file stems to list (default: every PNG in images/ that has a label).
      label_dir: label folder (e.g. a trainId folder written by `convert_palette_labels(..., label_map='cityscapes')`).

    Returns:
      number of lines written.
    """
    if names is None:
        names = sorted(os.path.splitext(os.path.basename(p))[0]
                       for p in glob.glob(os.path.join(gta5_root, 'images', '*.png'))
                       if os.path.isfile(os.path.join(gta5_root, label_dir, os.path.basename(p))))
    if not names:
        raise FileNotFoundError(f'no GTA5 image/label pairs under {gta5_root}')
    return write_image_list(out_list, [(f'images/{n}.png', f'{label_dir}/{n}.png') for n in names])
