"""List files of the originals: AAF/SegSort `<image> <mask>` lines and PSA/A2GNN id lists.

AAF/SegSort lists hold one sample per line, `<image> <mask>` separated by ONE space, relative to `data_dir`, which is
prepended by plain string concatenation (so `data_dir` needs its trailing '/'). Lines that do not split into exactly
two tokens are test lines: the whole line is both image and mask.
"""
import os
from common.io import atomic_write_text


class EmptyListError(ValueError):
    """A list file holds no sample."""


def _read_list_lines(data_list):
    """Lines of a list file without their '\\n' (original semantics: only '\\n' is stripped).

    Raises:
      FileNotFoundError: the list file does not exist.
      EmptyListError: the file holds no line.
    """
    if not os.path.isfile(data_list):
        raise FileNotFoundError(f'list file not found: {data_list}')
    with open(data_list, 'r') as f:
        lines = [line.strip('\n') for line in f]
    if not lines or all(not line.strip() for line in lines):
        raise EmptyListError(f'list file {data_list} is empty (no sample lines)')
    return lines


def split_list_line(line):
    """(image, mask) relative paths of one list line: two space-separated tokens, else the whole line twice."""
    tokens = line.split(' ')
    if len(tokens) == 2:
        return tokens[0], tokens[1]
    return line, line


def read_labeled_image_list(data_dir, data_list):
    """Reads an AAF/SegSort list file.

    Args:
      data_dir: root prepended to every token by string concatenation (keep its trailing '/').
      data_list: path of the list file.

    Returns:
      (images, masks): two lists of str paths, in list order (masks == images for single-column test lines).

    Raises:
      FileNotFoundError / EmptyListError naming the list file.
    """
    images, masks = [], []
    for line in _read_list_lines(data_list):
        image, mask = split_list_line(line)
        images.append(data_dir + image)
        masks.append(data_dir + mask)
    return images, masks


def read_unsup_labeled_image_list(data_dir, data_list, hed_dir=None):
    """SegSort unsupervised list: like `read_labeled_image_list` plus HED over-segmentation paths.

    The HED path is `mask.replace('segcls', 'hed')` as in the original (quirk Q-S2: masks without 'segcls' in their
    path, e.g. the SBD lines of train+.txt, are used unchanged as their own "over-segmentation"). With `hed_dir`
    (the fix) it is `hed_dir/<basename of the mask>` for every line.

    Returns:
      (images, masks, segs): three lists of str paths.
    """
    images, masks, segs = [], [], []
    for line in _read_list_lines(data_list):
        image, mask = split_list_line(line)
        images.append(data_dir + image)
        masks.append(data_dir + mask)
        if hed_dir:
            segs.append(os.path.join(hed_dir, os.path.basename(mask)))
        else:
            segs.append(data_dir + mask.replace('segcls', 'hed'))
    return images, masks, segs


def load_img_name_list(dataset_path):
    """PSA/A2GNN image ids of a list of `/JPEGImages/<id>.jpg [/SegmentationClassAug/<id>.png]` lines.

    As the original, the id is the first space-separated token sliced `[-15:-4]` (the 11-character VOC id
    `YYYY_NNNNNN`).

    Returns:
      list of str ids in list order.
    """
    lines = _read_list_lines(dataset_path)
    return [line.split(' ')[0][-15:-4] for line in lines if line.strip()]


def check_listed_files(paths, list_path, kind='image'):
    """Raises FileNotFoundError naming the list, its line and the path of the first listed file that is missing.

    For id lists whose files are read inside a tf.data pipeline, where a missing file would surface as a
    TensorFlow error from deep inside the iterator. `paths[i]` belongs to line i + 1 (lists without blank lines).
    """
    for line_no, path in enumerate(paths, 1):
        if not os.path.isfile(path):
            raise FileNotFoundError(f'{list_path} line {line_no}: {kind} file not found: {path}')


def write_image_list(path, rows):
    """Writes a list file atomically, one `<image> <mask>` (or single path) line per row, '\\n'-terminated.

    Args:
      path: output list file.
      rows: iterable of str or tuples of str (joined with one space).

    Returns:
      the number of lines written.
    """
    lines = [row if isinstance(row, str) else ' '.join(row) for row in rows]
    atomic_write_text(path, ''.join(line + '\n' for line in lines))
    return len(lines)


def write_pseudo_label_list(out_list, names, voc12_root, label_dir, data_dir=''):
    """List file `<image> <label>` for training a segmentation network (aaf.train) on pseudo labels.

    Args:
      out_list: the list file to write.
      names: image ids (e.g. `load_img_name_list(train_list)`).
      voc12_root: folder holding JPEGImages/<id>.jpg.
      label_dir: folder of pseudo-label PNGs <id>.png (e.g. PSA's random-walk output).
      data_dir: the `--data-dir` the list will be read with: paths are written relative to it when they lie
        inside it, otherwise absolute (then use --data-dir '').
    Returns:
      the number of lines.
    Raises:
      FileNotFoundError naming the first id whose image or pseudo label is missing.
    """
    def relative(path):
        path = os.path.abspath(path)
        if data_dir:
            root = os.path.abspath(data_dir)
            if path.startswith(root.rstrip(os.sep) + os.sep):
                return os.path.relpath(path, root)
        return path

    rows = []
    for name in names:
        image = os.path.join(voc12_root, 'JPEGImages', name + '.jpg')
        label = os.path.join(label_dir, name + '.png')
        for path, what in ((image, 'image'), (label, 'pseudo label')):
            if not os.path.isfile(path):
                raise FileNotFoundError(f'{what} of {name} not found: {path}')
        rows.append((relative(image), relative(label)))
    return write_image_list(out_list, rows)


def pseudo_label_list_main(argv=None):
    """`python -m common.data.lists OUT_LIST PSA_LIST VOC12_ROOT LABEL_DIR [DATA_DIR]` (used by the bash
    DeepLab stage)."""
    import sys
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (4, 5):
        raise SystemExit('usage: python -m common.data.lists OUT_LIST PSA_LIST VOC12_ROOT LABEL_DIR [DATA_DIR]')
    count = write_pseudo_label_list(args[0], load_img_name_list(args[1]), args[2], args[3],
                                    args[4] if len(args) == 5 else '')
    print(f'wrote {count} lines to {args[0]}')


if __name__ == '__main__':
    pseudo_label_list_main()
