"""Synthetic data sets: real layouts, list files, label encodings, XML boxes, seeds, determinism, learnability."""
import filecmp
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from common.colormap import VOC_CLASS_NAMES, voc_colormap
from common.data import synthetic

NUM_VOC = 10


@pytest.fixture(scope='module')
def voc(tmp_path_factory):
    out = tmp_path_factory.mktemp('voc')
    summary = synthetic.generate('voc', str(out), NUM_VOC, seed=5)
    return out, summary


def _lines(path):
    with open(path) as f:
        text = f.read()
    assert text.endswith('\n')
    return text.splitlines()


def _ids(lines):
    return [line.split(' ')[0][-15:-4] for line in lines]


def _png(path):
    with Image.open(path) as image:
        return image.mode, np.array(image), image.getpalette()


def test_voc_lists_follow_the_originals_forms_and_splits(voc):
    out, summary = voc
    aaf = {k: _lines(out / 'dataset' / 'voc12' / f'{k}.txt') for k in ('train+', 'train', 'val')}
    psa = {k: _lines(out / 'voc12' / f'{k}.txt') for k in ('train_aug', 'train', 'val')}
    for lines in list(aaf.values()):
        for line in lines:
            image, mask = line.split(' ')
            image_id = image[-15:-4]
            assert image == f'VOC2012/JPEGImages/{image_id}.jpg'
            assert mask in (f'VOC2012/segcls/{image_id}.png', f'sbd/dataset/clsimg/{image_id}.png')
            assert (out / 'VOCdevkit' / image).is_file() and (out / 'VOCdevkit' / mask).is_file()
    for lines in psa.values():
        for line in lines:
            image_id = line[12:23]
            assert line == f'/JPEGImages/{image_id}.jpg /SegmentationClassAug/{image_id}.png'
    # train+ = VOC-seg train + SBD-only ids (exactly as PSA's train_aug); val is disjoint; every id appears once
    assert _ids(aaf['train+']) == _ids(psa['train_aug'])
    assert _ids(aaf['train']) == _ids(psa['train']) and _ids(aaf['val']) == _ids(psa['val'])
    assert set(_ids(aaf['train'])) < set(_ids(aaf['train+']))
    assert not set(_ids(aaf['val'])) & set(_ids(aaf['train+']))
    assert len(_ids(aaf['train+'])) + len(_ids(aaf['val'])) == NUM_VOC == summary['num_images']
    assert all(line.endswith('segcls/' + i + '.png') for line, i in zip(aaf['train'], _ids(aaf['train'])))
    # the other engineer's readers parse them
    from common.data.lists import load_img_name_list, read_labeled_image_list
    images, masks = read_labeled_image_list(str(out / 'VOCdevkit') + '/', str(out / 'dataset/voc12/train+.txt'))
    assert all(os.path.isfile(p) for p in images + masks)
    assert load_img_name_list(str(out / 'voc12/train_aug.txt')) == _ids(psa['train_aug'])


def test_voc_label_pngs_have_the_real_modes_and_values(voc):
    out, _ = voc
    root = out / 'VOCdevkit' / 'VOC2012'
    voc_ids = _ids(_lines(out / 'dataset/voc12/train.txt')) + _ids(_lines(out / 'dataset/voc12/val.txt'))
    sbd_ids = sorted(set(_ids(_lines(out / 'dataset/voc12/train+.txt'))) - set(voc_ids))
    assert sbd_ids, 'the layout must contain SBD-only ids'
    palette = voc_colormap().reshape(-1).tolist()
    for image_id in voc_ids:
        mode, segcls, _ = _png(root / 'segcls' / f'{image_id}.png')
        assert mode == 'L'
        assert set(np.unique(segcls)) <= set(range(21)) | {255}
        assert (segcls == 255).any() and (segcls == 0).any() and ((segcls > 0) & (segcls < 255)).any()
        for folder in ('SegmentationClass', 'SegmentationClassAug'):
            mode, indices, pal = _png(root / folder / f'{image_id}.png')
            assert mode == 'P' and pal[:len(palette)] == palette
            np.testing.assert_array_equal(indices, segcls)
        mode, objects, pal = _png(root / 'SegmentationObject' / f'{image_id}.png')
        assert mode == 'P' and pal[:len(palette)] == palette
        np.testing.assert_array_equal(objects == 255, segcls == 255)
        np.testing.assert_array_equal(objects == 0, segcls == 0)
        # the void ring separates every pair of different labels: no two 4-neighbours carry different valid ids
        for a, b in ((segcls[1:], segcls[:-1]), (segcls[:, 1:], segcls[:, :-1])):
            assert not np.any((a != b) & (a != 255) & (b != 255))
        assert not (root.parent / 'sbd/dataset/clsimg' / f'{image_id}.png').exists()
    for image_id in sbd_ids:
        mode, clsimg, _ = _png(root.parent / 'sbd/dataset/clsimg' / f'{image_id}.png')
        assert mode == 'L' and 255 not in clsimg and len(np.unique(clsimg)) >= 3
        mode, aug, _ = _png(root / 'SegmentationClassAug' / f'{image_id}.png')
        assert mode == 'P'
        np.testing.assert_array_equal(aug, clsimg)
        assert not (root / 'segcls' / f'{image_id}.png').exists()


def test_hed_segments_never_cross_a_label_border(voc):
    out, _ = voc
    root = out / 'VOCdevkit' / 'VOC2012'
    for image_id in _ids(_lines(out / 'voc12/train_aug.txt')) + _ids(_lines(out / 'voc12/val.txt')):
        mode, hed, _ = _png(root / 'hed' / f'{image_id}.png')
        _, label, _ = _png(root / 'SegmentationClassAug' / f'{image_id}.png')
        assert mode == 'L' and hed.min() >= 1 and hed.max() < 255
        valid = label != 255
        pairs = np.unique(np.stack([hed[valid], label[valid]]), axis=1)
        assert len(np.unique(pairs[0])) == pairs.shape[1], 'a segment spans two classes'
        # more segments than labelled regions: a real over-segmentation
        assert len(np.unique(hed)) > 2 * len(np.unique(label[valid]))


def test_xml_boxes_are_tight_one_based_boxes_of_the_objects(voc):
    out, _ = voc
    root = out / 'VOCdevkit' / 'VOC2012'
    voc_ids = set(_ids(_lines(out / 'voc12/train.txt')) + _ids(_lines(out / 'voc12/val.txt')))
    for image_id in _ids(_lines(out / 'voc12/train_aug.txt')) + _ids(_lines(out / 'voc12/val.txt')):
        tree = ET.parse(root / 'Annotations' / f'{image_id}.xml').getroot()
        with Image.open(root / 'JPEGImages' / f'{image_id}.jpg') as image:
            width, height = image.size
            assert image.mode == 'RGB' and image.format == 'JPEG'
        assert int(tree.find('size/width').text) == width and int(tree.find('size/height').text) == height
        _, label, _ = _png(root / 'SegmentationClassAug' / f'{image_id}.png')
        objects = tree.findall('object')
        assert 2 <= len(objects) <= 4
        names = [o.find('name').text for o in objects]
        assert len(set(names)) == len(names) and set(names) <= set(VOC_CLASS_NAMES[1:])
        assert set(np.unique(label)) - {0, 255} == {VOC_CLASS_NAMES.index(n) for n in names}
        for obj, name in zip(objects, names):
            box = [int(obj.find('bndbox/' + k).text) - 1 for k in ('xmin', 'ymin', 'xmax', 'ymax')]
            ys, xs = np.nonzero(label == VOC_CLASS_NAMES.index(name))
            assert box[0] <= xs.min() and box[1] <= ys.min() and box[2] >= xs.max() and box[3] >= ys.max()
            if image_id in voc_ids:  # the void ring covers the border: every box edge touches class or void
                c = VOC_CLASS_NAMES.index(name)
                inside = label[box[1]:box[3] + 1, box[0]:box[2] + 1]
                for edge in (inside[0], inside[-1], inside[:, 0], inside[:, -1]):
                    assert np.isin(edge, [c, 255]).any()
            else:
                assert box == [xs.min(), ys.min(), xs.max(), ys.max()]
            assert 0 <= box[0] <= box[2] < width and 0 <= box[1] <= box[3] < height


def test_cls_labels_npy_matches_the_xml(voc):
    out, summary = voc
    from common.data.cls_labels import load_image_label_from_xml
    labels = np.load(out / 'voc12' / 'cls_labels.npy', allow_pickle=True).item()
    ids = _ids(_lines(out / 'voc12/train_aug.txt')) + _ids(_lines(out / 'voc12/val.txt'))
    assert list(labels) == ids
    for image_id in ids:
        assert labels[image_id].dtype == np.float32 and labels[image_id].shape == (20,)
        np.testing.assert_array_equal(labels[image_id],
                                      load_image_label_from_xml(image_id, str(out / 'VOCdevkit' / 'VOC2012')))
    assert summary['cls_labels'] == str(out / 'voc12' / 'cls_labels.npy')


def test_seeds_are_grayscale_and_agree_with_the_ground_truth(voc):
    out, summary = voc
    root = out / 'VOCdevkit' / 'VOC2012'
    train_aug = _ids(_lines(out / 'voc12/train_aug.txt'))
    fractions = {}
    for folder in synthetic.SEED_FOLDERS:
        assert summary['seed_dirs'][folder] == str(out / 'data' / 'Init_Label' / folder)
        labelled = total = 0
        for image_id in train_aug:
            mode, seed, _ = _png(out / 'data' / 'Init_Label' / folder / f'{image_id}.png')
            _, gt, _ = _png(root / 'SegmentationClassAug' / f'{image_id}.png')
            assert mode == 'L' and seed.shape == gt.shape
            assert set(np.unique(seed)) <= set(range(21)) | {255}
            known = (seed != 255) & (gt != 255)
            np.testing.assert_array_equal(seed[known], gt[known], err_msg=f'{folder}/{image_id}')
            assert set(np.unique(seed)) - {255} <= set(np.unique(gt)) | {0}
            labelled += int((seed != 255).sum())
            total += seed.size
        fractions[folder] = labelled / total
    # sparsity ordering of the supervision types
    assert fractions['SEAM_Point'] < fractions['SEAM_Scribble'] < fractions['Scribble_SuperPixel']
    assert fractions['Scribble_SuperPixel'] < fractions['SEAM_Image'] < fractions['SEAM_Box']
    assert not (out / 'data' / 'Init_Label' / 'SEAM_Box' / f"{_ids(_lines(out / 'voc12/val.txt'))[0]}.png").exists()


def test_nearest_mean_colour_classifier_recognises_object_pixels(voc):
    out, _ = voc
    root = out / 'VOCdevkit' / 'VOC2012'
    ids = _ids(_lines(out / 'voc12/train_aug.txt')) + _ids(_lines(out / 'voc12/val.txt'))
    pixels, classes = [], []
    for image_id in ids:
        with Image.open(root / 'JPEGImages' / f'{image_id}.jpg') as image:
            rgb = np.asarray(image.convert('RGB'), np.float32)
        _, label, _ = _png(root / 'SegmentationClassAug' / f'{image_id}.png')
        obj = (label > 0) & (label < 255)
        pixels.append(rgb[obj])
        classes.append(label[obj])
    pixels, classes = np.concatenate(pixels), np.concatenate(classes)
    # class means from the generator's colour table (a model that never saw these images)
    means = np.asarray(synthetic.VOC_CLASS_COLORS, np.float32)
    predicted = np.argmin(((pixels[:, None, :] - means[None]) ** 2).sum(-1), axis=1) + 1
    assert np.mean(predicted == classes) > 0.85
    # and a wrong pipeline (BGR instead of RGB) visibly fails
    swapped = np.argmin(((pixels[:, None, ::-1] - means[None]) ** 2).sum(-1), axis=1) + 1
    assert np.mean(swapped == classes) < 0.5


def test_same_seed_gives_identical_bytes_and_reruns_are_idempotent(tmp_path):
    first, second, other = tmp_path / 'a', tmp_path / 'b', tmp_path / 'c'
    kwargs = dict(num_images=3, seed=11, height=40, width=56)
    synthetic.generate('voc', str(first), **kwargs)
    synthetic.generate('voc', str(second), **kwargs)
    files = sorted(p.relative_to(first) for p in first.rglob('*') if p.is_file())
    assert len(files) > 20
    assert sorted(p.relative_to(second) for p in second.rglob('*') if p.is_file()) == files
    for rel in files:
        assert filecmp.cmp(first / rel, second / rel, shallow=False), rel
    before = {rel: (first / rel).read_bytes() for rel in files}
    synthetic.generate('voc', str(first), **kwargs)
    assert all((first / rel).read_bytes() == data for rel, data in before.items())
    assert not [p for p in first.rglob('.tmp_*')], 'temporary files left behind'
    synthetic.generate('voc', str(other), **dict(kwargs, seed=12))
    jpg = 'VOCdevkit/VOC2012/JPEGImages/' + synthetic.voc_image_id(0) + '.jpg'
    assert (other / jpg).read_bytes() != (first / jpg).read_bytes()
    with Image.open(first / jpg) as image:
        assert image.size == (56, 40)


def test_voc_default_sizes_vary_and_are_not_square(voc):
    out, summary = voc
    sizes = set()
    for path in (out / 'VOCdevkit/VOC2012/JPEGImages').glob('*.jpg'):
        with Image.open(path) as image:
            sizes.add(image.size)
    assert len(sizes) > NUM_VOC // 2 and any(w != h for w, h in sizes)
    assert all(96 <= s <= 160 for size in sizes for s in size)
    assert sum(summary['objects_per_image']['histogram'].values()) == NUM_VOC
    assert abs(sum(summary['class_pixel_frequency'].values()) - 1) < 1e-6


def test_cityscapes_layout_ids_and_lists(tmp_path):
    summary = synthetic.generate('cityscapes', str(tmp_path), 4, seed=2, height=48, width=96)
    root = tmp_path / 'Cityscapes'
    assert summary['splits'] == {'train': 3, 'val': 1}
    try:  # independent reference: the official label table
        from cityscapesscripts.helpers.labels import id2label
        reference = {label_id: label.trainId for label_id, label in id2label.items() if label_id >= 0}
    except ImportError:  # optional extra
        reference = synthetic.CITYSCAPES_LABELID_TO_TRAINID
    lut = np.full(256, 255, np.uint8)
    for label_id, train_id in reference.items():
        lut[label_id] = train_id
    seen = set()
    for split in ('train', 'val'):
        for line in _lines(tmp_path / 'dataset' / 'cityscapes' / f'{split}.txt'):
            image, mask = line.split(' ')
            parts = image.split('/')
            assert parts[0] == 'leftImg8bit' and parts[1] == split and image.endswith('_000019_leftImg8bit.png')
            name = parts[3][:-len('_leftImg8bit.png')]
            assert name.startswith(parts[2] + '_')
            assert mask == f'gtFineId/{split}/{parts[2]}/{name}_gtFineId_labelIds.png'
            with Image.open(root / image) as im:
                assert im.mode == 'RGB' and im.size == (96, 48)
            mode, label_ids, _ = _png(root / 'gtFine' / split / parts[2] / f'{name}_gtFine_labelIds.png')
            assert mode == 'L' and label_ids.max() <= 33
            mode, train_ids, _ = _png(root / mask)
            assert mode == 'L'
            np.testing.assert_array_equal(train_ids, lut[label_ids])
            np.testing.assert_array_equal(_png(root / 'gtFineId' / split / 'all' /
                                               f'{name}_gtFineId_labelIds.png')[1], train_ids)
            mode, instances, _ = _png(root / 'gtFine' / split / parts[2] / f'{name}_gtFine_instanceIds.png')
            assert mode.startswith('I') and instances.max() >= 1000
            expected = np.where(instances >= 1000, instances // 1000, instances)
            np.testing.assert_array_equal(expected, label_ids)
            assert set(np.unique(instances[instances >= 1000] // 1000)) <= set(synthetic.CITYSCAPES_INSTANCE_LABELIDS)
            seen |= set(np.unique(train_ids))
    assert {0, 1, 2, 10, 255} <= seen


def test_gta5_layout(tmp_path):
    summary = synthetic.generate('gta5', str(tmp_path), 2, seed=0, height=40, width=72)
    lines = _lines(tmp_path / 'dataset' / 'gta5' / 'train.txt')
    assert lines == ['images/00001.png labels/00001.png', 'images/00002.png labels/00002.png']
    for line in lines:
        image, label = line.split(' ')
        with Image.open(tmp_path / 'GTA5' / image) as im:
            assert im.mode == 'RGB' and im.size == (72, 40)
        mode, ids, pal = _png(tmp_path / 'GTA5' / label)
        assert mode == 'P' and ids.max() <= 33 and 7 in ids and 23 in ids  # indices are labelIds: road, sky
        assert tuple(pal[7 * 3:7 * 3 + 3]) == (128, 64, 128)  # road in the Cityscapes colour
    assert summary['num_images'] == 2


def test_bad_arguments_name_the_flag(tmp_path):
    with pytest.raises(ValueError, match='--layout'):
        synthetic.generate('kitti', str(tmp_path), 2)
    with pytest.raises(ValueError, match='--num_images'):
        synthetic.generate('voc', str(tmp_path), 1)
    with pytest.raises(ValueError, match='--height'):
        synthetic.generate('voc', str(tmp_path), 2, height=4)


def test_cli_writes_the_layout_and_prints_statistics(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
    result = subprocess.run(
        [sys.executable, '-m', 'common.data.synthetic', '--layout', 'gta5', '--out', str(tmp_path),
         '--num-images', '2', '--seed', '3', '--height', '32', '--width', '48'],
        capture_output=True, text=True, env=env, timeout=300,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'layout gta5: 2 images' in result.stdout and 'class pixel frequency' in result.stdout
    assert (tmp_path / 'GTA5' / 'images' / '00002.png').is_file()


def test_unwritable_output_folder_is_named(tmp_path):
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    with pytest.raises(OSError, match=r'--out .*a_file/voc: cannot write to the output folder'):
        synthetic.generate('voc', str(blocker / 'voc'), 2)


def test_voc_classes_subset_draws_only_those_classes(tmp_path):
    synthetic.generate('voc', str(tmp_path), 8, seed=2, height=48, width=48, classes=(3, 1, 7))
    labels = np.load(tmp_path / 'voc12/cls_labels.npy', allow_pickle=True).item()
    present = set()
    for vector in labels.values():
        present |= set((np.flatnonzero(vector) + 1).tolist())
        assert vector.sum() >= 2
    assert present <= {1, 3, 7} and len(present) >= 2
    for path in (tmp_path / 'VOCdevkit/VOC2012/SegmentationClassAug').glob('*.png'):
        assert set(np.unique(_png(path)[1]).tolist()) <= {0, 1, 3, 7, 255}
    sample = synthetic.make_voc_sample(2, 0, 48, 48)
    assert sample['jpeg'] == synthetic.make_voc_sample(2, 0, 48, 48, classes=None)['jpeg']
    for bad in ((4,), (0, 1), (1, 21)):
        with pytest.raises(ValueError, match='--classes'):
            synthetic.generate('voc', str(tmp_path / 'bad'), 2, classes=bad)
    with pytest.raises(ValueError, match='--classes'):
        synthetic.generate('gta5', str(tmp_path / 'bad'), 2, classes=(1, 2))
