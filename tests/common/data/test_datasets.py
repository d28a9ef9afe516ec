"""Data-set layouts, Cityscapes id tables, palette decoding and list builders."""
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

