import os

import numpy as np
import pytest

from affinitynet import cam as cam_lib
from affinitynet import evaluate
from cli_helpers import run_main, write_list
from common.io import save_png


def test_cam_labels_threshold_and_alpha():
    cam = {2: np.array([[0.9, 0.1]], np.float32), 5: np.array([[0.2, 0.15]], np.float32)}
    assert evaluate.cam_labels(cam, 'threshold', 0.2, (1, 2)).tolist() == [[3, 0]]
    # alpha: bg = (1 - max)^alpha = [0.1, 0.85^1]
    assert evaluate.cam_labels(cam, 'alpha', 1, (1, 2)).tolist() == [[3, 0]]
    assert evaluate.cam_labels({}, 'alpha', 1, (1, 2)).tolist() == [[0, 0]]


def test_pred_dir_and_sweep_against_numpy_reference(tmp_path):
    rng = np.random.default_rng(0)
    names = ['2007_000001', '2007_000002']
    gts, cams = {}, {}
    for name in names:
        gt = rng.integers(0, 3, [6, 7]).astype(np.uint8)
        gt[0, 0] = 255
        gts[name] = gt
        save_png(str(tmp_path / 'gt' / f'{name}.png'), gt)
        cams[name] = {0: rng.uniform(size=[6, 7]).astype(np.float32), 1: rng.uniform(size=[6, 7]).astype(np.float32)}
        cam_lib.save_dict(str(tmp_path / 'cam' / f'{name}.npy'), cams[name])
        save_png(str(tmp_path / 'pred' / f'{name}.png'), evaluate.cam_labels(cams[name], 'threshold', 0.3))
    metric = evaluate.evaluate_pred_dir(names, str(tmp_path / 'pred'), str(tmp_path / 'gt'))

    def reference(threshold):
        inter, union = np.zeros(21), np.zeros(21)
        for name in names:
            pred = evaluate.cam_labels(cams[name], 'threshold', threshold)
            gt = gts[name]
            valid = gt != 255
            for c in range(21):
                inter[c] += np.sum((pred == c) & (gt == c) & valid)
                union[c] += np.sum(((pred == c) | (gt == c)) & valid)
        present = union > 0
        return 100 * np.mean(inter[present] / union[present])

    # classes absent from both prediction and ground truth count 0 in the original benchmark, so compare the
    # per-class IoU of the present ones
    iou = metric.iou()
    assert np.isclose(np.mean(iou[:3]), reference(0.3))
    sweep = evaluate.sweep_cam_dir(names, str(tmp_path / 'cam'), str(tmp_path / 'gt'), 'threshold', [0.1, 0.3])
    assert np.isclose(np.mean(sweep[0.3].iou()[:3]), reference(0.3))
    assert np.isclose(np.mean(sweep[0.1].iou()[:3]), reference(0.1))
    table = evaluate.format_sweep('threshold', sweep)
    assert '(best)' in table and '| 0.3' in table


def test_cli_writes_table_and_curve(tmp_path):
    name = '2007_000001'
    save_png(str(tmp_path / 'VOC' / 'SegmentationClass' / f'{name}.png'), np.zeros([4, 4], np.uint8))
    cam_lib.save_dict(str(tmp_path / 'cam' / f'{name}.npy'), {3: np.zeros([4, 4], np.float32)})
    run_main(evaluate, list=write_list(tmp_path / 'l.txt', [name]), voc12_root=tmp_path / 'VOC',
             cam_dir=tmp_path / 'cam', sweep='alpha', values='1,4', out_dir=tmp_path / 'out')
    assert (tmp_path / 'out' / 'sweep.png').read_bytes()[:4] == b'\x89PNG'
    assert '| alpha |' in (tmp_path / 'out' / 'sweep.md').read_text()
    save_png(str(tmp_path / 'VOC' / 'SegmentationClass' / '2007_000009.png'), np.zeros([4, 4], np.uint8))
    with pytest.raises(FileNotFoundError, match='CAM file not found: .*2007_000009.npy'):
        run_main(evaluate, list=write_list(tmp_path / 'l2.txt', ['2007_000009']), voc12_root=tmp_path / 'VOC',
                 cam_dir=tmp_path / 'cam')
