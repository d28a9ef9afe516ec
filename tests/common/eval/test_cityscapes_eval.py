"""common.eval.cityscapes: id tables, the encoder CLI, and agreement with cityscapesScripts' own evaluator."""

import numpy as np
import pytest
from absl import flags
from PIL import Image

from common.cli import normalize_flag_names
from common.eval import benchmark, cityscapes

CITIES = ('aachen', 'bonn')
NUM_TRAIN_IDS = 19


def test_tables_match_cityscapesscripts_labels():
    labels = pytest.importorskip('cityscapesscripts.helpers.labels')
    for label in labels.labels:
        if label.id < 0:
            continue
        want = 255 if label.ignoreInEval else label.trainId
        assert cityscapes.LABELID_TO_TRAINID[label.id] == want, label.name
    assert len(cityscapes.LABELID_TO_TRAINID) == 34
    for train_id, label_id in enumerate(cityscapes.TRAINID_TO_LABELID):
        assert labels.id2label[label_id].trainId == train_id


def test_encode_cityscapes_testid_mapping():
    pred = np.array([[0, 1, 2, 18], [19, 254, 255, 5]], np.uint8)
    np.testing.assert_array_equal(cityscapes.encode_cityscapes_testid(pred), [[7, 8, 11, 33], [0, 0, 0, 17]])
    every = np.arange(256).reshape(16, 16)
    encoded = cityscapes.encode_cityscapes_testid(every)
    assert encoded.dtype == np.uint8
    np.testing.assert_array_equal(encoded.ravel()[:19], cityscapes.TRAINID_TO_LABELID)
    assert not encoded.ravel()[19:].any()
    # label -> train -> label is the identity on evaluated labelIds
    label_ids = np.array(cityscapes.TRAINID_TO_LABELID)
    np.testing.assert_array_equal(
        cityscapes.encode_cityscapes_testid(cityscapes.label_ids_to_train_ids(label_ids)), label_ids)
    np.testing.assert_array_equal(cityscapes.label_ids_to_train_ids(np.array([0, 7, 33, 34, 200])),
                                  [255, 0, 18, 255, 255])


def _structured_maps(rng, num_images, block=4, shape=(16, 32)):
    """Random labelId GT maps made of blocks (every evaluated class and some void ids occur), and trainId
    predictions: GT with some blocks relabelled (to random trainIds or 255) and salt noise."""
    blocks_per_image = (shape[0] // block) * (shape[1] // block)
    void_ids = [i for i, t in enumerate(cityscapes.LABELID_TO_TRAINID) if t == 255]
    pool = list(cityscapes.TRAINID_TO_LABELID) + void_ids[:6]
    pool += list(rng.integers(0, 34, size=num_images * blocks_per_image - len(pool)))
    pool = rng.permutation(np.array(pool, np.uint8)).reshape(num_images, shape[0] // block, shape[1] // block)
    gts, preds = [], []
    for image_blocks in pool:
        gt = np.kron(image_blocks, np.ones((block, block), np.uint8))
        pred = cityscapes.label_ids_to_train_ids(gt).copy()
        relabel = np.kron(rng.random(image_blocks.shape) < 0.3, np.ones((block, block), bool))
        random_ids = np.kron(rng.integers(0, NUM_TRAIN_IDS + 1, size=image_blocks.shape),
                             np.ones((block, block), np.int64))
        pred[relabel] = np.where(random_ids == NUM_TRAIN_IDS, 255, random_ids)[relabel]
        salt = rng.random(gt.shape) < 0.05
        pred[salt] = rng.integers(0, NUM_TRAIN_IDS, size=int(salt.sum()))
        gts.append(gt)
        preds.append(pred.astype(np.uint8))
    return gts, preds


def _write_layout(root, gts, preds):
    """tmp Cityscapes layout: gtFine/val/<city>/*_gtFine_labelIds.png (+ our *_gtFine_labelTrainIds.png) and
    trainId predictions pred/<city>/*_leftImg8bit.png."""
    for i, (gt, pred) in enumerate(zip(gts, preds)):
        city = CITIES[i % len(CITIES)]
        stem = f'{city}_{i:06d}_000019'
        gt_dir = root / 'gtFine' / 'val' / city
        pred_dir = root / 'pred' / city
        gt_dir.mkdir(parents=True, exist_ok=True)
        pred_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(gt, 'L').save(gt_dir / f'{stem}_gtFine_labelIds.png')
        Image.fromarray(cityscapes.label_ids_to_train_ids(gt), 'L').save(gt_dir / f'{stem}_gtFine_labelTrainIds.png')
        Image.fromarray(pred, 'L').save(pred_dir / f'{stem}_leftImg8bit.png')


@pytest.fixture
def encoder_flags(temporary_flags):
    """Defines the encoder CLI's flags for one test and removes the ones it added afterwards."""
    return temporary_flags(cityscapes.define_flags)


def _encode_with_cli(pred_dir, save_dir):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(normalize_flag_names(['encode', '--pred-dir', str(pred_dir), '--save-dir', str(save_dir),
                                      '--noprogress']))
    cityscapes.main(['encode'])


def _official_scores(monkeypatch, root, pred_dir):
    """cityscapesScripts' pixel-level evaluation of labelId predictions in `pred_dir` against root/gtFine/val."""
    monkeypatch.setattr(np, 'in1d', np.isin, raising=False)  # removed in NumPy 2.x, used by the evaluator
    monkeypatch.setenv('CITYSCAPES_DATASET', str(root))
    (root / 'export').mkdir()
    monkeypatch.setenv('CITYSCAPES_EXPORT_DIR', str(root / 'export'))  # read when the module is first imported
    evaluator = pytest.importorskip('cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling')
    args = evaluator.args
    for name, value in (('predictionPath', str(pred_dir)), ('predictionWalk', None),
                        ('evalInstLevelScore', False), ('JSONOutput', False), ('quiet', True),
                        ('evalPixelAccuracy', False)):
        monkeypatch.setattr(args, name, value)
    gt_files = sorted(str(p) for p in (root / 'gtFine' / 'val').rglob('*_gtFine_labelIds.png'))
    pred_files = [evaluator.getPrediction(args, gt) for gt in gt_files]
    result = evaluator.evaluateImgLists(pred_files, gt_files, args)
    names = [evaluator.id2label[label_id].name for label_id in cityscapes.TRAINID_TO_LABELID]
    return np.array([result['classScores'][n] for n in names]), result['averageScoreClasses']


@pytest.mark.parametrize('drop_class', [None, 4])
def test_miou_agrees_with_cityscapesscripts(tmp_path, monkeypatch, encoder_flags, drop_class):
    rng = np.random.default_rng(2 if drop_class is None else 3)
    gts, preds = _structured_maps(rng, num_images=3)
    if drop_class is not None:  # a class absent from GT and prediction: official evaluator gives it NaN
        for gt, pred in zip(gts, preds):
            gt[gt == cityscapes.TRAINID_TO_LABELID[drop_class]] = 0
            pred[pred == drop_class] = 255
    _write_layout(tmp_path, gts, preds)

    ours = benchmark.evaluate_dirs(str(tmp_path / 'pred'), str(tmp_path / 'gtFine' / 'val'), NUM_TRAIN_IDS,
                                   string_replace='leftImg8bit,gtFine_labelTrainIds')
    _encode_with_cli(tmp_path / 'pred', tmp_path / 'encoded')
    official_iou, official_mean = _official_scores(monkeypatch, tmp_path, tmp_path / 'encoded')

    present = ~np.isnan(official_iou)
    assert present.sum() == NUM_TRAIN_IDS - (drop_class is not None)
    np.testing.assert_allclose(ours['iou'][present] / 100, official_iou[present], rtol=1e-9, atol=1e-12)
    assert 0.2 < official_mean < 0.95  # the generated predictions are neither trivial nor perfect
    if drop_class is None:
        assert ours['mean_iou'] / 100 == pytest.approx(official_mean, rel=1e-9)
    else:
        assert ours['iou'][drop_class] == 0  # original: absent class counts 0 in the mean ...
        assert ours['mean_iou'] / 100 == pytest.approx(official_mean * 18 / 19, rel=1e-9)
        skip = benchmark.evaluate_dirs(str(tmp_path / 'pred'), str(tmp_path / 'gtFine' / 'val'), NUM_TRAIN_IDS,
                                       string_replace='leftImg8bit,gtFine_labelTrainIds', skip_absent=True)
        assert skip['mean_iou'] / 100 == pytest.approx(official_mean, rel=1e-9)  # ... skip_absent: nan-mean


def test_encoder_cli_writes_same_relative_paths(tmp_path, encoder_flags):
    rng = np.random.default_rng(0)
    (tmp_path / 'pred' / 'a' / 'b').mkdir(parents=True)
    maps = {'x.png': rng.integers(0, 20, size=(5, 7)), 'a/b/y.png': np.full((3, 3), 255)}
    for name, label in maps.items():
        Image.fromarray(label.astype(np.uint8), 'L').save(tmp_path / 'pred' / name)
    _encode_with_cli(tmp_path / 'pred', tmp_path / 'out')
    written = sorted(str(p.relative_to(tmp_path / 'out')) for p in (tmp_path / 'out').rglob('*') if p.is_file())
    assert written == sorted(maps)  # no temporary files left behind
    for name, label in maps.items():
        with Image.open(tmp_path / 'out' / name) as image:
            assert image.mode == 'L'
            np.testing.assert_array_equal(np.asarray(image), cityscapes.encode_cityscapes_testid(label))


def test_encoder_errors_name_flags(tmp_path):
    with pytest.raises(NotADirectoryError, match='--pred_dir'):
        cityscapes.encode_dir(str(tmp_path / 'missing'), str(tmp_path / 'out'))
    with pytest.raises(ValueError, match='--save_dir'):
        cityscapes.encode_dir(str(tmp_path), '')
