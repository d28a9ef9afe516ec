"""Data-set layouts, Cityscapes id tables, palette decoding and list builders."""
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from common.data import datasets
from common.data.lists import read_labeled_image_list
from common.data.pipeline import build_inference_dataset


def test_cityscapes_lut_matches_official_table():
    labels = pytest.importorskip('cityscapesscripts.helpers.labels')
    lut = datasets.cityscapes_label_lut()
    for label in labels.labels:
        if 0 <= label.id < 256:
            expected = 255 if label.trainId in (255, -1) else label.trainId
            assert lut[label.id] == expected, label.name
    assert (lut[34:] == 255).all()
    assert list(datasets.CITYSCAPES_TRAINID_TO_LABELID) == [
        next(l.id for l in labels.labels if l.trainId == t) for t in range(19)]


def _palette_png(path, indices):
    im = Image.fromarray(indices.astype(np.uint8), mode='P')
    palette = np.zeros((256, 3), np.uint8)
    palette[:, 0] = 255 - np.arange(256)  # luminance differs from the index
    palette[:, 1] = 17
    im.putpalette(palette.flatten().tolist())
    im.save(path)


def test_palette_labels_read_as_indices_not_luminance(tmp_path):
    indices = np.arange(12, dtype=np.uint8).reshape(3, 4)
    _palette_png(tmp_path / 'a.png', indices)
    np.testing.assert_array_equal(datasets.read_label_indices(str(tmp_path / 'a.png')), indices)
    luminance = tf.io.decode_png((tmp_path / 'a.png').read_bytes(), channels=1).numpy()[..., 0]
    assert not np.array_equal(luminance, indices)  # why the palette decoder exists
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / 'rgb.png')
    with pytest.raises(ValueError, match='rgb.png has mode RGB'):
        datasets.read_label_indices(str(tmp_path / 'rgb.png'))


def test_convert_palette_labels_writes_grayscale(tmp_path):
    indices = np.array([[0, 1], [20, 255]], np.uint8)
    (tmp_path / 'src').mkdir()
    _palette_png(tmp_path / 'src' / '2007_000001.png', indices)
    assert datasets.convert_palette_labels(str(tmp_path / 'src'), str(tmp_path / 'segcls')) == 1
    out = Image.open(tmp_path / 'segcls' / '2007_000001.png')
    assert out.mode == 'L'
    np.testing.assert_array_equal(np.array(out), indices)


def test_cityscapes_conversion_list_and_pipeline_label_map(tmp_path):
    root = tmp_path / 'Cityscapes'
    (root / 'leftImg8bit/val/lindau').mkdir(parents=True)
    (root / 'gtFine/val/lindau').mkdir(parents=True)
    label_ids = np.array([[7, 8, 26, 0], [33, 1, 24, 5]], np.uint8)
    Image.fromarray(np.zeros((2, 4, 3), np.uint8)).save(root / 'leftImg8bit/val/lindau/l_000001_leftImg8bit.png')
    Image.fromarray(label_ids).save(root / 'gtFine/val/lindau/l_000001_gtFine_labelIds.png')
    expected = np.array([[0, 1, 13, 255], [18, 255, 11, 255]], np.uint8)

    assert datasets.convert_cityscapes_labels(str(root), 'val') == 1
    converted = np.array(Image.open(root / 'gtFineId/val/lindau/l_000001_gtFineId_labelIds.png'))
    np.testing.assert_array_equal(converted, expected)
    assert (root / 'gtFineId/val/all/l_000001_gtFineId_labelIds.png').is_file()

    datasets.build_cityscapes_list(str(root), 'val', str(tmp_path / 'val.txt'))
    assert (tmp_path / 'val.txt').read_text() == (
        'leftImg8bit/val/lindau/l_000001_leftImg8bit.png gtFineId/val/lindau/l_000001_gtFineId_labelIds.png\n')
    datasets.build_cityscapes_list(str(root), 'val', str(tmp_path / 'raw.txt'), label_layout='gtFine')
    (_, label, _), = build_inference_dataset(str(root) + '/', str(tmp_path / 'raw.txt'), label_map='cityscapes',
                                             num_classes=19)
    np.testing.assert_array_equal(label.numpy()[..., 0], expected)


def test_voc_and_gta5_lists(tmp_path):
    datasets.build_voc_list(['2007_000032', '2008_000002'], str(tmp_path / 'voc.txt'), label_dir='sbd/dataset/clsimg')
    images, masks = read_labeled_image_list('/V/', str(tmp_path / 'voc.txt'))
    assert images[1] == '/V/VOC2012/JPEGImages/2008_000002.jpg' and masks[1] == '/V/sbd/dataset/clsimg/2008_000002.png'
    (tmp_path / 'GTA5/images').mkdir(parents=True)
    (tmp_path / 'GTA5/labels').mkdir()
    for name in ('00001', '00002'):
        Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / f'GTA5/images/{name}.png')
    _palette_png(tmp_path / 'GTA5/labels/00002.png', np.full((2, 2), 26, np.uint8))
    assert datasets.build_gta5_list(str(tmp_path / 'GTA5'), str(tmp_path / 'gta.txt')) == 1
    (_, label, _), = build_inference_dataset(str(tmp_path / 'GTA5') + '/', str(tmp_path / 'gta.txt'),
                                             **{k: datasets.DATASETS['gta5'][k] for k in ('label_decoder', 'label_map',
                                                                                          'num_classes')})
    assert (label.numpy() == 13).all()  # car: labelId 26 -> trainId 13


# --------------------------------------------------------------------------------------------------------------
# `python -m common.data.datasets`: the originals' list files from a download.

def _bytes(path):
    with open(path, 'rb') as f:
        return f.read()


def _flag_values(argv):
    from absl import flags
    from common.cli import normalize_flag_names
    fv = flags.FlagValues()
    datasets._define_flags(fv)
    fv(normalize_flag_names(['datasets'] + argv))
    return fv


def test_voc_lists_equal_the_synthetic_ones(synthetic_voc, tmp_path, capsys):
    from common.data.cls_labels import load_cls_labels
    datasets.main([], _flag_values([f'--voc-root={synthetic_voc}/VOCdevkit', f'--out-dir={tmp_path}']))
    names = ['dataset/voc12/train+.txt', 'dataset/voc12/train.txt', 'dataset/voc12/val.txt', 'voc12/train_aug.txt',
             'voc12/train.txt', 'voc12/val.txt']
    for name in names:
        assert _bytes(tmp_path / name) == _bytes(f'{synthetic_voc}/{name}'), name
    ours, theirs = (load_cls_labels(str(root) + '/voc12/cls_labels.npy') for root in (tmp_path, synthetic_voc))
    assert list(ours) == list(theirs)
    for key in theirs:
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
    # train+ = VOC train + SBD (train, val) minus VOC val, without the SBD lists' duplicates and VOC ids.
    ids = datasets.voc_split_ids(f'{synthetic_voc}/VOCdevkit')
    assert len(ids['train_aug']) == len(set(ids['train_aug'])) and not set(ids['train_aug']) & set(ids['val'])
    assert 'voc12/cls_labels.npy' in capsys.readouterr().out


def _write_mat(path, segmentation):
    import scipy.io
    os.makedirs(os.path.dirname(path), exist_ok=True)
    scipy.io.savemat(path, {'GTcls': {'Segmentation': segmentation, 'Boundaries': np.zeros(1),
                                      'CategoriesPresent': np.unique(segmentation)}})


def test_voc_with_sbd_mat_conversion(tmp_path):
    """A hand-made download: VOC train [a, b], val [v]; SBD train [c, a], val [v, d] as .mat files."""
    from common.colormap import voc_colormap
    from common.data.cls_labels import load_cls_labels
    from common.io import save_png
    voc, sbd = tmp_path / 'VOCdevkit' / 'VOC2012', tmp_path / 'benchmark_RELEASE'
    rng = np.random.RandomState(0)
    a, b, v, c, d = '2007_000001', '2007_000002', '2008_000003', '2009_000004', '2010_000005'
    labels = {}
    for image_id, cls in ((a, 1), (b, 2), (v, 3), (c, 4), (d, 5)):
        labels[image_id] = np.where(rng.rand(5, 7) < 0.5, cls, 0).astype(np.uint8)
        labels[image_id][0, 0] = 255
        os.makedirs(voc / 'Annotations', exist_ok=True)
        (voc / 'Annotations' / f'{image_id}.xml').write_text(
            f'<annotation><object><name>{VOC_NAMES[cls]}</name></object></annotation>')
    for image_id in (a, b, v):
        save_png(str(voc / 'SegmentationClass' / f'{image_id}.png'), labels[image_id], 'P', voc_colormap())
    for image_id in (c, d):
        labels[image_id][0, 0] = 0  # SBD has no void
        _write_mat(str(sbd / 'dataset' / 'cls' / f'{image_id}.mat'), labels[image_id])
    os.makedirs(voc / 'ImageSets' / 'Segmentation')
    (voc / 'ImageSets' / 'Segmentation' / 'train.txt').write_text(f'{a}\n{b}\n')
    (voc / 'ImageSets' / 'Segmentation' / 'val.txt').write_text(f'{v}\n')
    (sbd / 'dataset' / 'train.txt').write_text(f'{c}\n{a}\n')
    (sbd / 'dataset' / 'val.txt').write_text(f'{v}\n{d}\n')
    out = tmp_path / 'repo'
    datasets.prepare_voc(str(tmp_path / 'VOCdevkit'), str(out), str(sbd))
    assert (out / 'dataset/voc12/train+.txt').read_text() == ''.join(
        f'VOC2012/JPEGImages/{i}.jpg {folder}/{i}.png\n'
        for i, folder in ((a, 'VOC2012/segcls'), (b, 'VOC2012/segcls'), (c, 'sbd/dataset/clsimg'),
                          (d, 'sbd/dataset/clsimg')))
    assert (out / 'voc12/val.txt').read_text() == f'/JPEGImages/{v}.jpg /SegmentationClassAug/{v}.png\n'
    for image_id in (a, b, v):
        np.testing.assert_array_equal(datasets.read_label_indices(voc / 'segcls' / f'{image_id}.png'),
                                      labels[image_id])
    for image_id in (c, d):
        np.testing.assert_array_equal(
            datasets.read_label_indices(tmp_path / 'VOCdevkit/sbd/dataset/clsimg' / f'{image_id}.png'),
            labels[image_id])
    for image_id in (a, b, v, c, d):
        with Image.open(voc / 'SegmentationClassAug' / f'{image_id}.png') as im:
            assert im.mode == 'P'
            np.testing.assert_array_equal(np.array(im), labels[image_id])
    cls = load_cls_labels(str(out / 'voc12/cls_labels.npy'))
    assert list(cls) == [a, b, c, d, v]
    assert [int(np.argmax(cls[i])) + 1 for i in cls] == [1, 2, 4, 5, 3]


VOC_NAMES = ['background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus']


def test_missing_sbd_mat_and_voc_sets_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='--voc-root: .*ImageSets/Segmentation/train.txt not found'):
        datasets.voc_split_ids(str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r'SBD label not found: .*cls/x\.mat'):
        datasets.read_sbd_mat(str(tmp_path / 'cls' / 'x.mat'))
    bad = tmp_path / 'bad.mat'
    import scipy.io
    scipy.io.savemat(bad, {'other': np.zeros(2)})
    with pytest.raises(ValueError, match='not an SBD class label file'):
        datasets.read_sbd_mat(str(bad))
    with pytest.raises(ValueError, match='--voc-root, --cityscapes-root, --gta5-root'):
        datasets.main([], _flag_values([]))


def test_cityscapes_and_gta5_lists_equal_the_synthetic_ones(tmp_path):
    import shutil
    from common.data.synthetic import generate
    generate('cityscapes', str(tmp_path / 'cs'), num_images=5, seed=0, height=16, width=32)
    generate('gta5', str(tmp_path / 'gta'), num_images=2, seed=0, height=16, width=32)
    expected = {split: _bytes(tmp_path / f'cs/dataset/cityscapes/{split}.txt') for split in ('train', 'val')}
    converted = _bytes(next((tmp_path / 'cs/Cityscapes/gtFineId/train').glob('*/*_gtFineId_labelIds.png')))
    shutil.rmtree(tmp_path / 'cs/Cityscapes/gtFineId')  # a fresh download has only gtFine labelIds
    datasets.main([], _flag_values([f'--cityscapes-root={tmp_path}/cs/Cityscapes', f'--gta5-root={tmp_path}/gta/GTA5',
                                    f'--out-dir={tmp_path}/out']))
    for split in ('train', 'val'):
        assert _bytes(tmp_path / f'out/dataset/cityscapes/{split}.txt') == expected[split]
    assert converted in [_bytes(p) for p in (tmp_path / 'cs/Cityscapes/gtFineId/train').glob('*/*.png')]
    assert _bytes(tmp_path / 'out/dataset/gta5/train.txt') == _bytes(tmp_path / 'gta/dataset/gta5/train.txt')
    # GTA5 benchmark ground truth: palette labelIds -> grayscale trainIds.
    for label in (tmp_path / 'gta/GTA5/labels').glob('*.png'):
        train_ids = datasets.read_label_indices(tmp_path / 'gta/GTA5/trainIds' / label.name)
        with Image.open(tmp_path / 'gta/GTA5/trainIds' / label.name) as im:
            assert im.mode == 'L'
        np.testing.assert_array_equal(train_ids, datasets.cityscapes_label_lut()[datasets.read_label_indices(label)])
        assert set(np.unique(train_ids)) - {255} and set(np.unique(train_ids)) <= set(range(19)) | {255}
# ---- property-based: label decoders return the stored class indices exactly ----
from hypothesis import given, settings, strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402

_LABELS = arrays(np.uint8, st.tuples(st.integers(1, 9), st.integers(1, 9)),
                 elements=st.one_of(st.integers(0, 20), st.just(255)))


@settings(max_examples=25, deadline=None)
@given(label=_LABELS, palette_seed=st.integers(0, 2 ** 16))
def test_label_decoders_property_return_stored_indices(tmp_path_factory, label, palette_seed):
    from common.data.aaf_reader import decode_label
    folder = tmp_path_factory.mktemp('labels')
    gray, palette = folder / 'gray.png', folder / 'palette.png'
    Image.fromarray(label, mode='L').save(gray)
    image = Image.fromarray(label, mode='L').convert('P')  # indices = gray values
    image.putpalette(np.random.default_rng(palette_seed).integers(0, 256, 768, dtype=np.uint8).tolist())
    image.save(palette)
    # The original's decode_png(channels=1) on a grayscale PNG, and raw palette indices whatever the colours.
    np.testing.assert_array_equal(decode_label(tf.io.read_file(str(gray))).numpy()[..., 0], label)
    np.testing.assert_array_equal(datasets.read_label_indices(str(gray)), label)
    np.testing.assert_array_equal(datasets.read_label_indices(str(palette)), label)

