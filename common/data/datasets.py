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

`python -m common.data.datasets` (console script `affinity-seg-datasets`) writes the originals' list files from a
download, converting labels where the originals expected converted ones::

    python -m common.data.datasets --voc-root data/VOCdevkit --sbd-root data/benchmark_RELEASE \
        --cityscapes-root data/Cityscapes --gta5-root data/GTA5 --out-dir .

  VOC 2012 + SBD -> dataset/voc12/{train+,train,val}.txt (AAF/SegSort), voc12/{train_aug,train,val}.txt and
  voc12/cls_labels.npy (PSA/A2GNN); SBD `dataset/cls/<id>.mat` -> `VOCdevkit/sbd/dataset/clsimg/<id>.png`, VOC
  `SegmentationClass` -> `VOC2012/segcls` (grayscale) and `VOC2012/SegmentationClassAug` (palette) where missing.
  Id sets as the originals': train = VOC ImageSets/Segmentation/train.txt, val = .../val.txt, train+ = train_aug =
  VOC train, then SBD train and SBD val (file order) minus VOC train and VOC val.
  Cityscapes -> dataset/cityscapes/{train,val}.txt (gtFine labelIds -> gtFineId trainIds where missing).
  GTA5 -> dataset/gta5/train.txt, and GTA5/trainIds/<n>.png (labelIds -> trainIds) for the benchmark.
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


# ----------------------------------------------------------------------------------------------------------------
# List files of the originals from a download (`python -m common.data.datasets`)

def voc_split_ids(voc_root, sbd_root=None):
    """The originals' VOC id sets.

    Args:
      voc_root: the `VOCdevkit` folder (holding `VOC2012/ImageSets/Segmentation/{train,val}.txt`).
      sbd_root: the SBD folder holding `dataset/{train,val}.txt` (`benchmark_RELEASE`); default
        `<voc_root>/sbd` if that has them, else no SBD (train_aug = train).
    Returns:
      dict: 'train', 'val' (VOC ids in file order), 'sbd' (SBD ids that are in neither, file order: SBD train then
      SBD val, duplicates dropped), 'train_aug' = train + sbd.
    """
    sets = os.path.join(voc_root, 'VOC2012', 'ImageSets', 'Segmentation')
    for split in ('train', 'val'):
        if not os.path.isfile(os.path.join(sets, split + '.txt')):
            raise FileNotFoundError(f'--voc-root: {os.path.join(sets, split + ".txt")} not found (expected the '
                                    f'VOCdevkit folder of the VOC 2012 download)')
    train, val = (read_ids(os.path.join(sets, split + '.txt')) for split in ('train', 'val'))
    if sbd_root is None and os.path.isfile(os.path.join(voc_root, 'sbd', 'dataset', 'train.txt')):
        sbd_root = os.path.join(voc_root, 'sbd')
    sbd_ids = []
    if sbd_root is not None:
        for split in ('train', 'val'):
            path = os.path.join(sbd_root, 'dataset', split + '.txt')
            if not os.path.isfile(path):
                raise FileNotFoundError(f'--sbd-root: {path} not found (expected the benchmark_RELEASE folder)')
            with open(path) as f:
                sbd_ids += [line.strip() for line in f if line.strip()]
    taken, sbd = set(train) | set(val), []
    for image_id in sbd_ids:
        if image_id not in taken:
            taken.add(image_id)
            sbd.append(image_id)
    return {'train': train, 'val': val, 'sbd': sbd, 'train_aug': train + sbd}


def read_sbd_mat(path):
    """Class ids uint8 [H, W] of an SBD `dataset/cls/<id>.mat` (struct GTcls, field Segmentation)."""
    import scipy.io
    if not os.path.isfile(path):
        raise FileNotFoundError(f'SBD label not found: {path} (check --sbd-root)')
    try:
        gt = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)['GTcls']
        return np.asarray(gt.Segmentation, np.uint8)
    except (KeyError, AttributeError, ValueError) as error:
        raise ValueError(f'{path} is not an SBD class label file (struct GTcls with field Segmentation): '
                         f'{error}') from error


def convert_sbd_labels(sbd_root, ids, out_dir):
    """SBD `<sbd_root>/dataset/cls/<id>.mat` -> grayscale class-index PNGs `<out_dir>/<id>.png`; returns count."""
    for image_id in _progress(ids, 'sbd'):
        save_png(os.path.join(out_dir, image_id + '.png'),
                 read_sbd_mat(os.path.join(sbd_root, 'dataset', 'cls', image_id + '.mat')), 'L')
    return len(ids)


def prepare_voc(voc_root, out_dir, sbd_root=None):
    """Converts missing VOC / SBD labels and writes the AAF/SegSort and PSA/A2GNN VOC lists and cls_labels.npy.

    Args:
      voc_root: the `VOCdevkit` folder.
      out_dir: where `dataset/voc12/` and `voc12/` go (the repository root, as in the originals).
      sbd_root: the SBD `benchmark_RELEASE` folder (see `voc_split_ids`).
    Returns:
      dict name -> path of every file written.
    """
    from common.colormap import voc_colormap
    from common.data.cls_labels import load_image_label_from_xml, save_cls_labels
    ids = voc_split_ids(voc_root, sbd_root)
    if sbd_root is None and os.path.isdir(os.path.join(voc_root, 'sbd')):
        sbd_root = os.path.join(voc_root, 'sbd')
    voc = os.path.join(voc_root, 'VOC2012')
    segcls, aug = os.path.join(voc, 'segcls'), os.path.join(voc, 'SegmentationClassAug')
    clsimg = os.path.join(voc_root, 'sbd', 'dataset', 'clsimg')

    def missing(folder, id_list):
        return [i for i in id_list if not os.path.isfile(os.path.join(folder, i + '.png'))]

    voc_ids = ids['train'] + ids['val']
    todo = missing(segcls, voc_ids)
    if todo:
        convert_palette_labels(os.path.join(voc, 'SegmentationClass'), segcls, todo)
    todo = missing(clsimg, ids['sbd'])
    if todo:
        if sbd_root is None:
            raise FileNotFoundError(f'{len(todo)} SBD labels missing in {clsimg} and no --sbd-root to convert them')
        convert_sbd_labels(sbd_root, todo, clsimg)
    palette = voc_colormap()
    for folder, id_list in ((segcls, voc_ids), (clsimg, ids['sbd'])):
        for image_id in missing(aug, id_list):
            save_png(os.path.join(aug, image_id + '.png'),
                     read_label_indices(os.path.join(folder, image_id + '.png')), 'P', palette)

    sbd = set(ids['sbd'])

    def aaf_row(image_id):
        folder = 'sbd/dataset/clsimg' if image_id in sbd else 'VOC2012/segcls'
        return f'VOC2012/JPEGImages/{image_id}.jpg', f'{folder}/{image_id}.png'

    written = {}
    for name, split in (('train+', 'train_aug'), ('train', 'train'), ('val', 'val')):
        path = os.path.join(out_dir, 'dataset', 'voc12', name + '.txt')
        write_image_list(path, [aaf_row(i) for i in ids[split]])
        written['aaf/' + name] = path
    for split in ('train_aug', 'train', 'val'):
        path = os.path.join(out_dir, 'voc12', split + '.txt')
        write_image_list(path, [(f'/JPEGImages/{i}.jpg', f'/SegmentationClassAug/{i}.png') for i in ids[split]])
        written['psa/' + split] = path
    # make_cls_labels.py: train_aug ids, then val ids, labels from the XML annotations.
    labels = {i: load_image_label_from_xml(i, voc) for i in _progress(ids['train_aug'] + ids['val'], 'cls_labels')}
    written['cls_labels'] = os.path.join(out_dir, 'voc12', 'cls_labels.npy')
    save_cls_labels(labels, written['cls_labels'])
    return written


def prepare_cityscapes(cityscapes_root, out_dir):
    """Converts missing gtFineId labels (train, val) and writes dataset/cityscapes/{train,val}.txt."""
    written = {}
    for split in ('train', 'val'):
        names = _cityscapes_names(cityscapes_root, split)
        if any(not os.path.isfile(os.path.join(cityscapes_root, 'gtFineId', split, n + '_gtFineId_labelIds.png'))
               for n in names):
            convert_cityscapes_labels(cityscapes_root, split)
        path = os.path.join(out_dir, 'dataset', 'cityscapes', split + '.txt')
        build_cityscapes_list(cityscapes_root, split, path)
        written['cityscapes/' + split] = path
    return written


GTA5_TRAINID_DIR = 'trainIds'


def prepare_gta5(gta5_root, out_dir):
    """Writes dataset/gta5/train.txt (every image with a label; the training pipeline reads the palette labelIds
    with the 'gta5' settings) and, where missing, `<gta5_root>/trainIds/<n>.png`: the labels as grayscale
    Cityscapes trainIds (0..18, 255), the ground truth `--gt-dir` of the mIoU benchmark."""
    path = os.path.join(out_dir, 'dataset', 'gta5', 'train.txt')
    build_gta5_list(gta5_root, path)
    names = [os.path.basename(line.split(' ')[1])[:-len('.png')] for line in open(path).read().splitlines()]
    train_ids = os.path.join(gta5_root, GTA5_TRAINID_DIR)
    todo = [n for n in names if not os.path.isfile(os.path.join(train_ids, n + '.png'))]
    if todo:
        convert_palette_labels(os.path.join(gta5_root, 'labels'), train_ids, todo, label_map='cityscapes')
    return {'gta5/train': path, 'gta5/trainIds': train_ids}


def _define_flags(flag_values):
    from absl import flags
    fv = dict(flag_values=flag_values)
    flags.DEFINE_string('voc_root', None, 'VOCdevkit folder of the VOC 2012 download (holding VOC2012/).', **fv)
    flags.DEFINE_string('sbd_root', None, 'SBD benchmark_RELEASE folder (dataset/{train,val}.txt, dataset/cls/*.mat); '
                        'default VOCdevkit/sbd if present.', **fv)
    flags.DEFINE_string('cityscapes_root', None, 'Cityscapes folder (leftImg8bit/, gtFine/).', **fv)
    flags.DEFINE_string('gta5_root', None, 'GTA5 folder (images/, labels/).', **fv)
    flags.DEFINE_string('out_dir', '.', 'Where dataset/voc12, dataset/cityscapes, dataset/gta5 and voc12/ go.', **fv)


def main(argv, flag_values=None):
    """Writes the list files of every data set given; prints what it wrote."""
    from absl import flags
    del argv
    cfg = flag_values if flag_values is not None else flags.FLAGS
    if not (cfg.voc_root or cfg.cityscapes_root or cfg.gta5_root):
        raise ValueError('give at least one of --voc-root, --cityscapes-root, --gta5-root')
    written = {}
    if cfg.voc_root:
        written.update(prepare_voc(cfg.voc_root, cfg.out_dir, cfg.sbd_root))
    if cfg.cityscapes_root:
        written.update(prepare_cityscapes(cfg.cityscapes_root, cfg.out_dir))
    if cfg.gta5_root:
        written.update(prepare_gta5(cfg.gta5_root, cfg.out_dir))
    for name, path in written.items():
        print(f'{name}: {path}')


def run():
    """Console script `affinity-seg-datasets`."""
    from absl import flags
    from common.cli import run_app
    _define_flags(flags.FLAGS)
    run_app(main)


if __name__ == '__main__':
    run()
