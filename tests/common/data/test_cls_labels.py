"""cls_labels.npy format and its construction from VOC XML (psa voc12/make_cls_labels.py)."""
import os

import numpy as np
import pytest

from common.data import cls_labels

XML = """<annotation>
\t<folder>VOC2012</folder>
\t<filename>{id}.jpg</filename>
\t<object>
\t\t<name>person</name>
\t\t<bndbox><xmin>3</xmin><ymin>4</ymin><xmax>30</xmax><ymax>40</ymax></bndbox>
\t\t<part><name>head</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></part>
\t\t<part><name>hand</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></part>
\t</object>
\t<object>
\t\t<name>{second}</name>
\t\t<difficult>1</difficult>
\t\t<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox>
\t</object>
\t<object>
\t\t<name>person</name>
\t\t<bndbox><xmin>3</xmin><ymin>4</ymin><xmax>30</xmax><ymax>40</ymax></bndbox>
\t</object>
</annotation>
"""


def _write_voc(root, entries):
    os.makedirs(root / 'Annotations', exist_ok=True)
    for image_id, second in entries.items():
        (root / 'Annotations' / f'{image_id}.xml').write_text(XML.format(id=image_id, second=second))


def test_class_order_is_voc_without_background():
    assert cls_labels.CAT_LIST[0] == 'aeroplane' and cls_labels.CAT_LIST[-1] == 'tvmonitor'
    assert len(cls_labels.CAT_LIST) == 20 and cls_labels.CAT_NAME_TO_NUM['person'] == 14
    assert cls_labels.CAT_NAME_TO_NUM['diningtable'] == 10 and cls_labels.CAT_NAME_TO_NUM['pottedplant'] == 15


def test_xml_names_count_objects_of_the_20_classes_only(tmp_path):
    _write_voc(tmp_path, {'2007_000032': 'tvmonitor', '2008_000008': 'head'})
    label = cls_labels.load_image_label_from_xml('2007_000032', str(tmp_path))
    expected = np.zeros(20, np.float32)
    expected[[14, 19]] = 1.0  # person (twice, and its head/hand parts are ignored) + difficult tvmonitor
    assert label.dtype == np.float32
    np.testing.assert_array_equal(label, expected)
    only_person = cls_labels.load_image_label_from_xml('2008_000008', str(tmp_path))
    np.testing.assert_array_equal(np.nonzero(only_person)[0], [14])


def test_missing_and_broken_xml_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='2007_000099.xml'):
        cls_labels.load_image_label_from_xml('2007_000099', str(tmp_path))
    os.makedirs(tmp_path / 'Annotations')
    (tmp_path / 'Annotations' / 'bad.xml').write_text('<annotation><object>')
    with pytest.raises(ValueError, match='bad.xml'):
        cls_labels.load_image_label_from_xml('bad', str(tmp_path))


def test_save_load_round_trip_is_the_original_npy_format(tmp_path):
    labels = {'2007_000032': np.eye(20, dtype=np.float32)[3], '2007_000039': np.ones(20, np.float64)}
    path = tmp_path / 'sub' / 'cls_labels.npy'
    cls_labels.save_cls_labels(labels, str(path))
    raw = np.load(path, allow_pickle=True)  # what PSA/A2GNN do
    assert raw.shape == () and raw.dtype == object
    loaded = raw.item()
    assert list(loaded) == list(labels)
    for key, value in labels.items():
        assert loaded[key].dtype == np.float32
        np.testing.assert_array_equal(loaded[key], value)
    assert cls_labels.load_cls_labels(str(path)).keys() == labels.keys()
    got = cls_labels.load_image_label_list_from_npy(['2007_000039', '2007_000032'], str(path))
    np.testing.assert_array_equal(got[1], labels['2007_000032'])
    with pytest.raises(KeyError, match='2010_000001'):
        cls_labels.load_image_label_list_from_npy(['2010_000001'], str(path))
    assert not [p for p in path.parent.iterdir() if p.name.startswith('.tmp')]
    with pytest.raises(ValueError, match='shape'):
        cls_labels.save_cls_labels({'x': np.zeros(21)}, str(path))
    np.save(tmp_path / 'not_a_dict.npy', np.zeros(3))
    with pytest.raises(ValueError, match='not_a_dict.npy'):
        cls_labels.load_cls_labels(str(tmp_path / 'not_a_dict.npy'))


def test_make_cls_labels_reads_train_then_val_ids(tmp_path):
    root = tmp_path / 'VOC2012'
    _write_voc(root, {'2007_000032': 'cat', '2007_000033': 'dog', '2007_000042': 'bus'})
    (tmp_path / 'train_aug.txt').write_text('/JPEGImages/2007_000033.jpg /SegmentationClassAug/2007_000033.png\n'
                                           '/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png\n')
    (tmp_path / 'val.txt').write_text('/JPEGImages/2007_000042.jpg /SegmentationClassAug/2007_000042.png\n')
    labels = cls_labels.make_cls_labels(str(tmp_path / 'train_aug.txt'), str(tmp_path / 'val.txt'), str(root))
    assert list(labels) == ['2007_000033', '2007_000032', '2007_000042']
    assert [tuple(np.nonzero(v)[0]) for v in labels.values()] == [(11, 14), (7, 14), (5, 14)]

    # the CLI (absl flags, hyphenated spellings accepted), parsed in-process on a private FlagValues
    from absl import app, flags
    from common.cli import normalize_flag_names
    flag_values = flags.FlagValues()
    cls_labels._define_flags(flag_values)
    out = tmp_path / 'cls_labels.npy'
    flag_values(normalize_flag_names(['prog', '--voc12-root', str(root), '--train-list', str(tmp_path / 'train_aug.txt'),
                                      '--val_list', str(tmp_path / 'val.txt'), '--out', str(out)]))
    cls_labels.main([], flag_values)
    cli = np.load(out, allow_pickle=True).item()
    assert list(cli) == list(labels)
    for key in labels:
        np.testing.assert_array_equal(cli[key], labels[key])
    flag_values.voc12_root = str(tmp_path / 'nowhere')
    with pytest.raises(app.UsageError, match='--voc12_root'):
        cls_labels.main([], flag_values)
