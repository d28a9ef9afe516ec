"""PSA/A2GNN image-level labels: `cls_labels.npy` and its construction from VOC XML (`voc12/make_cls_labels.py`).

`cls_labels.npy` holds a dict {image id: float32[20] multi-hot} saved with `np.save` as a 0-d object array, classes
in VOC order without background (aeroplane ... tvmonitor). The original builds it by taking EVERY `<name>` element
of `Annotations/<id>.xml` (object names, and also part names such as head/hand/foot, which are dropped because only
the 20 class names count) over the ids of the train list followed by the val list.

CLI (flags keep the original's names; hyphens are accepted):
  python -m common.data.cls_labels --voc12_root VOCdevkit/VOC2012 --train_list voc12/train_aug.txt \\
      --val_list voc12/val.txt --out voc12/cls_labels.npy
"""
import os
from xml.dom import minidom

import numpy as np

from common.colormap import VOC_CLASS_NAMES
from common.io import atomic_write, check_output_flags

IMG_FOLDER_NAME = 'JPEGImages'
ANNOT_FOLDER_NAME = 'Annotations'
CAT_LIST = list(VOC_CLASS_NAMES[1:])
CAT_NAME_TO_NUM = dict(zip(CAT_LIST, range(len(CAT_LIST))))
NUM_CLASSES = len(CAT_LIST)


def load_image_label_from_xml(img_name, voc12_root):
    """Multi-hot label of one image from `<voc12_root>/Annotations/<img_name>.xml`.

    Args:
      img_name: image id, e.g. '2007_000032'.
      voc12_root: the VOC2012 directory.
    Returns:
      float32 [20]: 1.0 for every class whose name appears in a `<name>` element.
    Raises:
      FileNotFoundError naming the XML file; ValueError if it is not valid XML.
    """
    path = os.path.join(voc12_root, ANNOT_FOLDER_NAME, img_name + '.xml')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'annotation not found: {path} (check --voc12_root and the list files)')
    try:
        elements = minidom.parse(path).getElementsByTagName('name')
    except Exception as error:  # expat raises its own error type
        raise ValueError(f'annotation {path} is not valid XML: {error}') from error
    multi_hot = np.zeros(NUM_CLASSES, np.float32)
    for element in elements:
        if element.firstChild is None:
            continue
        name = element.firstChild.data.strip()
        if name in CAT_NAME_TO_NUM:
            multi_hot[CAT_NAME_TO_NUM[name]] = 1.0
    return multi_hot


def load_image_label_list_from_xml(img_name_list, voc12_root):
    """`load_image_label_from_xml` over a list of ids (list of float32 [20])."""
    return [load_image_label_from_xml(name, voc12_root) for name in img_name_list]


def load_cls_labels(cls_label_path):
    """Loads a `cls_labels.npy` dict (pickled 0-d object array; needs allow_pickle on numpy >= 1.16.3).

    Returns:
      dict id -> float32 [20].
    Raises:
      FileNotFoundError / ValueError naming the file.
    """
    if not os.path.isfile(cls_label_path):
        raise FileNotFoundError(f'cls_labels file not found: {cls_label_path}')
    array = np.load(cls_label_path, allow_pickle=True)
    if array.shape != () or not isinstance(array.item(), dict):
        raise ValueError(f'{cls_label_path}: expected a 0-d object array holding a dict id -> float32[20]')
    return array.item()


def load_image_label_list_from_npy(img_name_list, cls_label_path='voc12/cls_labels.npy'):
    """Labels of `img_name_list` from a `cls_labels.npy` (list of float32 [20]).

    Raises:
      KeyError naming the missing ids (e.g. test-list ids, which the original file does not hold).
    """
    labels = load_cls_labels(cls_label_path)
    missing = [name for name in img_name_list if name not in labels]
    if missing:
        raise KeyError(f'{cls_label_path} has no label for {len(missing)} ids, e.g. {missing[:3]}')
    return [labels[name] for name in img_name_list]


def save_cls_labels(labels, path):
    """Saves dict id -> multi-hot as the original's `cls_labels.npy` (np.save of the dict), atomically.

    Args:
      labels: dict str -> array-like [20] (stored as float32).
      path: output file (the '.npy' suffix is not added implicitly).
    """
    clean = {}
    for name, value in labels.items():
        value = np.asarray(value, np.float32)
        if value.shape != (NUM_CLASSES,):
            raise ValueError(f'cls label of {name!r} has shape {value.shape}, expected ({NUM_CLASSES},)')
        clean[str(name)] = value
    atomic_write(path, lambda handle: np.save(handle, clean))


def make_cls_labels(train_list, val_list, voc12_root):
    """The original `make_cls_labels.py`: ids of train_list then val_list -> labels from their XML.

    Args:
      train_list, val_list: PSA list files (`/JPEGImages/<id>.jpg ...` lines); val_list may be None.
      voc12_root: the VOC2012 directory holding `Annotations/`.
    Returns:
      dict id -> float32 [20] (insertion order = list order; a repeated id keeps its last label, like the original).
    """
    from common.data.lists import load_img_name_list
    names = load_img_name_list(train_list)
    if val_list:
        names.extend(load_img_name_list(val_list))
    return dict(zip(names, load_image_label_list_from_xml(names, voc12_root)))


def _define_flags(flag_values=None):
    from absl import flags
    flag_values = flags.FLAGS if flag_values is None else flag_values
    if 'voc12_root' in flag_values:
        return
    flags.DEFINE_string('train_list', 'voc12/train_aug.txt', 'PSA list whose ids get labels (first).',
                        flag_values=flag_values)
    flags.DEFINE_string('val_list', 'voc12/val.txt', 'Second PSA list ("" to skip).', flag_values=flag_values)
    flags.DEFINE_string('out', 'cls_labels.npy', 'Output .npy file.', flag_values=flag_values)
    flags.DEFINE_string('voc12_root', None, 'VOC2012 directory (holds Annotations/).', flag_values=flag_values)


def main(argv, flag_values=None):
    """absl main; `flag_values` (default absl.flags.FLAGS) must hold the flags of `_define_flags`."""
    from absl import app, flags
    del argv
    FLAGS = flags.FLAGS if flag_values is None else flag_values
    if not FLAGS.voc12_root:
        raise app.UsageError('--voc12_root: required (the VOC2012 directory holding Annotations/)')
    if not os.path.isdir(os.path.join(FLAGS.voc12_root, ANNOT_FOLDER_NAME)):
        raise app.UsageError(f'--voc12_root: {FLAGS.voc12_root} has no {ANNOT_FOLDER_NAME}/ directory')
    check_output_flags(FLAGS, parent_of=('out',))
    labels = make_cls_labels(FLAGS.train_list, FLAGS.val_list, FLAGS.voc12_root)
    save_cls_labels(labels, FLAGS.out)
    counts = np.bincount([int(v.sum()) for v in labels.values()], minlength=2)
    print(f'wrote {len(labels)} labels to {FLAGS.out}; labels-per-image histogram '
          f'{ {k: int(c) for k, c in enumerate(counts) if c} }')


def run():
    """Console-script entry point."""
    from common.cli import run_app
    _define_flags()
    run_app(main)


if __name__ == '__main__':
    run()
