"""common.eval.benchmark: the CLI reproduces the original scripts' printouts on the golden PNGs."""

import numpy as np
import pytest
from absl import flags
from PIL import Image

from common.cli import normalize_flag_names
from common.colormap import voc_colormap
from common.eval import benchmark


def _write_case(root, ins, case, with_inst=False):
    """Writes the golden arrays as PNGs: pred/gt mode 'L', inst as a palette ('P') PNG."""
    dirs = {name: root / name for name in ('pred', 'gt', 'inst')}
    for path in dirs.values():
        path.mkdir()
    for i, file_name in enumerate(case['scalars']['file_names']):
        Image.fromarray(ins[f'pred_{i}'], mode='L').save(dirs['pred'] / file_name)
        Image.fromarray(ins[f'gt_{i}'], mode='L').save(dirs['gt'] / file_name)
        if with_inst:
            inst = Image.fromarray(ins[f'inst_{i}'], mode='P')
            inst.putpalette(voc_colormap().ravel().tolist())
            inst.save(dirs['inst'] / file_name)
    return {name: str(path) + '/' for name, path in dirs.items()}


@pytest.fixture
def cli_flags(temporary_flags):
    """Defines the CLI's flags on the global FLAGS for one test and removes the ones it added afterwards."""
    return temporary_flags(benchmark.define_flags)


def _run_cli(argv, capsys):
    """Parses `argv` like the console script (either flag spelling), runs main, returns stdout."""
    flags.FLAGS.unparse_flags()
    flags.FLAGS(normalize_flag_names(['benchmark'] + argv + ['--noprogress']))
    capsys.readouterr()
    benchmark.main(['benchmark'])
    return capsys.readouterr().out


@pytest.mark.parametrize('spelling', ['hyphen', 'underscore'])
def test_cli_printout_equals_original_miou(golden, assert_golden, tmp_path, capsys, cli_flags, spelling):
    ins, outs, case = golden('aaf_benchmark_miou')
    dirs = _write_case(tmp_path, ins, case)
    sep = '-' if spelling == 'hyphen' else '_'
    out = _run_cli([f'--pred{sep}dir', dirs['pred'], f'--gt{sep}dir={dirs["gt"]}',
                    f'--num{sep}classes', str(case['scalars']['num_classes'])], capsys)
    assert_golden(out, outs['printout'], case['tolerance']['out_printout'])


def test_cli_printout_equals_original_instance_miou(golden, assert_golden, tmp_path, capsys, cli_flags):
    ins, outs, case = golden('aaf_benchmark_instance_miou')
    dirs = _write_case(tmp_path, ins, case, with_inst=True)
    out = _run_cli(['--pred-dir', dirs['pred'], '--gt-dir', dirs['gt'], '--inst-dir', dirs['inst'],
                    '--num-classes', '21'], capsys)
    assert_golden(out, outs['printout'], case['tolerance']['out_printout'])


def test_evaluate_dirs_numbers_golden(golden, assert_golden, tmp_path):
    ins, outs, case = golden('aaf_benchmark_miou')
    dirs = _write_case(tmp_path, ins, case)
    result = benchmark.evaluate_dirs(dirs['pred'], dirs['gt'], num_classes=21)
    assert result['num_images'] == 3
    for key in ('tp_fn', 'tp_fp', 'tp', 'iou', 'mean_iou', 'pixel_acc'):
        assert_golden(result[key], outs[key], case['tolerance']['out_' + key])


def test_evaluate_dirs_instance_numbers_golden(golden, assert_golden, tmp_path):
    ins, outs, case = golden('aaf_benchmark_instance_miou')
    dirs = _write_case(tmp_path, ins, case, with_inst=True)
    result = benchmark.evaluate_dirs(dirs['pred'], dirs['gt'], num_classes=21, inst_dir=dirs['inst'])
    assert_golden(result['instance_iou'], outs['iou'], case['tolerance']['out_iou'])
    assert_golden(result['instance_mean_iou'], outs['mean_iou'], case['tolerance']['out_mean_iou'])
    assert_golden(result['ninst'], outs['ninst'], case['tolerance']['out_ninst'])


def test_recursive_walk_and_string_replace(tmp_path):
    # Cityscapes-like layout: pred .../city/x_leftImg8bit.png -> gt .../city/x_gtFine_labelTrainIds.png
    pred_dir, gt_dir = tmp_path / 'pred', tmp_path / 'gt'
    rng = np.random.default_rng(0)
    pairs = []
    for city in ('aachen', 'bonn'):
        (pred_dir / city).mkdir(parents=True)
        (gt_dir / city).mkdir(parents=True)
        for k in range(2):
            gt = rng.integers(0, 4, size=(6, 9)).astype(np.uint8)
            gt[0] = 255
            pred = np.where(rng.random(gt.shape) < 0.7, gt, rng.integers(0, 4, size=gt.shape)).astype(np.uint8)
            Image.fromarray(pred, 'L').save(pred_dir / city / f'{city}_{k}_leftImg8bit.png')
            Image.fromarray(gt, 'L').save(gt_dir / city / f'{city}_{k}_gtFine_labelTrainIds.png')
            pairs.append((pred, gt))
    result = benchmark.evaluate_dirs(str(pred_dir), str(gt_dir), 4,
                                     string_replace='leftImg8bit,gtFine_labelTrainIds')
    assert result['num_images'] == 4
    tp_fn = sum(np.bincount(g[g < 4], minlength=4) for _, g in pairs)
    tp = sum(np.bincount(g[(g < 4) & (p == g)], minlength=4) for p, g in pairs)
    tp_fp = sum(np.bincount(p[g < 4], minlength=4) for p, g in pairs)
    np.testing.assert_array_equal(result['tp_fn'], tp_fn)
    np.testing.assert_array_equal(result['tp'], tp)
    np.testing.assert_allclose(result['iou'], 100 * tp / (tp_fn + tp_fp - tp + 1e-12))


def test_missing_ground_truth_names_both_files(tmp_path):
    (tmp_path / 'pred').mkdir()
    (tmp_path / 'gt').mkdir()
    Image.fromarray(np.zeros((3, 3), np.uint8), 'L').save(tmp_path / 'pred' / 'a.png')
    with pytest.raises(FileNotFoundError) as info:
        benchmark.evaluate_dirs(str(tmp_path / 'pred'), str(tmp_path / 'gt'), 21)
    message = str(info.value)
    assert str(tmp_path / 'gt' / 'a.png') in message and str(tmp_path / 'pred' / 'a.png') in message


def test_empty_or_missing_dirs_are_clear_errors(tmp_path):
    (tmp_path / 'pred').mkdir()
    (tmp_path / 'gt').mkdir()
    with pytest.raises(ValueError, match='no prediction files'):
        benchmark.evaluate_dirs(str(tmp_path / 'pred'), str(tmp_path / 'gt'), 21)
    with pytest.raises(NotADirectoryError, match='--pred_dir'):
        benchmark.evaluate_dirs(str(tmp_path / 'nope'), str(tmp_path / 'gt'), 21)
    with pytest.raises(NotADirectoryError, match='--gt_dir'):
        benchmark.evaluate_dirs(str(tmp_path / 'pred'), str(tmp_path / 'nope'), 21)
    with pytest.raises(ValueError, match='string_replace'):
        benchmark.evaluate_dirs(str(tmp_path / 'pred'), str(tmp_path / 'gt'), 21, string_replace='a,b,c')


def test_shape_mismatch_names_files(tmp_path):
    for name, shape in (('pred', (3, 4)), ('gt', (4, 3))):
        (tmp_path / name).mkdir()
        Image.fromarray(np.zeros(shape, np.uint8), 'L').save(tmp_path / name / 'a.png')
    with pytest.raises(ValueError, match='a.png'):
        benchmark.evaluate_dirs(str(tmp_path / 'pred'), str(tmp_path / 'gt'), 21)


def test_format_table_cityscapes_names_and_truncation():
    iou = np.arange(19, dtype=np.float64)
    text = benchmark.format_table(iou, 9.0, 0.5, class_names='cityscapes')
    lines = text.splitlines()
    assert lines[0] == 'class road      : 00, acc: 0.0000%'
    assert lines[6] == 'class traffic light: 06, acc: 6.0000%'
    assert lines[-2:] == ['mean IOU: 9.0000%', 'mean Pixel Acc: 0.5000%']
    # more classes than names: the extra rows are not printed (SegSort's behaviour), the means still are
    text = benchmark.format_table(np.zeros(23), 0.0, None, class_names='voc')
    assert len(text.splitlines()) == 21 + 1 and text.endswith('mean IOU: 0.0000%\n')


@pytest.mark.parametrize('role, fmt', [('prediction', 'JPEG'), ('ground-truth', 'PNG')])
def test_truncated_image_with_valid_header_names_the_file(tmp_path, role, fmt):
    labels = np.random.default_rng(0).integers(0, 21, (50, 60), dtype=np.uint8)
    for name in ('pred', 'gt'):
        (tmp_path / name).mkdir()
        Image.fromarray(labels, 'L').save(tmp_path / name / 'a.png', format='PNG')
    broken = tmp_path / ('pred' if role == 'prediction' else 'gt') / 'a.png'
    Image.fromarray(labels, 'L').save(broken, format=fmt)  # a JPEG under a .png name reads the same way
    content = broken.read_bytes()
    broken.write_bytes(content[:len(content) // 2])
    with pytest.raises(OSError, match=rf"cannot read {role} image '{broken}': image file is truncated"):
        benchmark.evaluate_dirs(str(tmp_path / 'pred'), str(tmp_path / 'gt'), 21)
