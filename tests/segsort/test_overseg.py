"""segsort.overseg: scikit-image over-segmentations in the HED mask format, Q-S2 guard."""
import numpy as np
import pytest
from absl import flags
from PIL import Image

from common.cli import normalize_flag_names
from common.data.pipeline import build_segmentation_dataset
from segsort import overseg


def parse(argv):
    fv = flags.FlagValues()
    overseg.define_flags(fv)
    fv(normalize_flag_names(['segsort.overseg'] + argv))
    return fv


@pytest.mark.parametrize('method', overseg.METHODS)
def test_over_segment_ids_are_compact_and_follow_colour(method):
    image = np.zeros([40, 60, 3], np.uint8)
    image[:, 30:] = [250, 20, 20]  # two flat halves: no region may straddle the colour edge
    ids = overseg.over_segment(image, method, slic_segments=8)
    assert ids.dtype == np.uint8 and ids.max() < 255
    np.testing.assert_array_equal(np.unique(ids), np.arange(ids.max() + 1))
    assert not set(np.unique(ids[:, :30])) & set(np.unique(ids[:, 30:]))


def test_overseg_writes_masks_the_unsupervised_reader_reads(synthetic_voc, tmp_path):
    data_list = f'{synthetic_voc}/dataset/voc12/train+.txt'
    hed_dir = tmp_path / 'hed'
    cfg = parse(['--method=slic', f'--data_dir={synthetic_voc}/VOCdevkit/', f'--data_list={data_list}',
                 f'--hed_dir={hed_dir}', '--noprogress'])
    count = overseg.main_from_flags(cfg)
    lines = open(data_list).read().split()
    assert count == len(lines) // 2
    first = np.asarray(Image.open(hed_dir / lines[1].split('/')[-1]))
    image = Image.open(f'{synthetic_voc}/VOCdevkit/{lines[0]}')
    assert first.shape == (image.height, image.width) and first.max() > 4
    dataset = build_segmentation_dataset(f'{synthetic_voc}/VOCdevkit/', data_list, (48, 48), 2,
                                         reader='segsort_unsup', hed_dir=str(hed_dir), seed=0, num_classes=21)
    _, _, clusters = next(iter(dataset))
    assert clusters.shape == (2, 48, 48, 1) and int(clusters.numpy().max()) <= 255


def test_overseg_refuses_to_overwrite_labels_without_hed_dir(synthetic_voc):
    # train+.txt holds SBD lines whose label path has no 'segcls' (Q-S2): the HED path would be the label.
    cfg = parse([f'--data_dir={synthetic_voc}/VOCdevkit/', f'--data_list={synthetic_voc}/dataset/voc12/train+.txt',
                 '--noprogress'])
    with pytest.raises(ValueError, match=r'contains no "segcls".*pass --hed_dir'):
        overseg.main_from_flags(cfg)
