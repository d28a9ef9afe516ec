"""A2GNN command-line programs on a tiny synthetic VOC set: flags, skip-existing / resume, bad inputs."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from absl import app, flags

from a2gnn import cli
from common.io import save_png

TINY = ['--width_multiplier', '0.0625', '--hidden', '8', '--epochs', '2', '--weights', '']


def _flags(mode, root, extra=()):
    fv = flags.FlagValues()
    cli.define_flags(mode, fv)
    voc = os.path.join(root, 'VOCdevkit', 'VOC2012')
    seeds = 'SEAM_Box' if mode == 'box' else 'SEAM_Image'
    argv = ['prog', '--voc12_root', voc, '--seed_label_root', os.path.join(root, 'data', 'Init_Label', seeds),
            '--infer_list', os.path.join(root, 'voc12', 'train.txt'), *TINY]
    if mode == 'box':
        argv += ['--BoxXmlpath', os.path.join(voc, 'Annotations')]
    fv(argv + list(extra))
    return fv


def _one_image_list(root, tmp_path, count=1):
    lines = open(os.path.join(root, 'voc12', 'train.txt')).read().splitlines()[:count]
    path = tmp_path / 'list.txt'
    path.write_text('\n'.join(lines) + '\n')
    return str(path), [line.split()[0][-15:-4] for line in lines]


@pytest.mark.parametrize('value, expected', [('False', False), ('false', False), ('0', False), ('True', True),
                                             ('1', True)])
def test_rw_is_a_real_boolean(value, expected):
    assert cli.str2bool(value) is expected


def test_rw_rejects_garbage(synthetic_voc, tmp_path):
    fv = _flags('others', synthetic_voc, ['--rw', 'maybe', '--save_path', str(tmp_path)])
    with pytest.raises(app.UsageError, match='--rw'):
        cli.main('others', fv, progress=False)


def test_missing_seed_folder_is_named(synthetic_voc, tmp_path):
    fv = _flags('box', synthetic_voc, ['--seed_label_root', str(tmp_path / 'nope'), '--save_path', str(tmp_path)])
    with pytest.raises(app.UsageError, match='nope'):
        cli.main('box', fv, progress=False)


def test_missing_cam_file_is_named(synthetic_voc, tmp_path):
    image_list, _ = _one_image_list(synthetic_voc, tmp_path)
    fv = _flags('others', synthetic_voc, ['--infer_list', image_list, '--rw', 'True', '--cam_dir',
                                          str(tmp_path / 'cams'), '--save_path', str(tmp_path / 'out')])
    with pytest.raises(FileNotFoundError, match='cams'):
        cli.main('others', fv, progress=False)


def test_seed_of_wrong_size_is_named(synthetic_voc, tmp_path):
    image_list, names = _one_image_list(synthetic_voc, tmp_path)
    seeds = tmp_path / 'seeds'
    save_png(str(seeds / (names[0] + '.png')), np.zeros((10, 12), np.uint8))
    fv = _flags('others', synthetic_voc, ['--infer_list', image_list, '--seed_label_root', str(seeds),
                                          '--save_path', str(tmp_path / 'out')])
    with pytest.raises(ValueError, match=r'seeds.*differs from its image'):
        cli.main('others', fv, progress=False)


def test_xml_without_objects_is_named(synthetic_voc, tmp_path):
    image_list, names = _one_image_list(synthetic_voc, tmp_path)
    xml_dir = tmp_path / 'xml'
    xml_dir.mkdir()
    (xml_dir / (names[0] + '.xml')).write_text('<annotation><filename>x.jpg</filename></annotation>')
    fv = _flags('box', synthetic_voc, ['--infer_list', image_list, '--BoxXmlpath', str(xml_dir),
                                       '--save_path', str(tmp_path / 'out')])
    with pytest.raises(ValueError, match='no <object>'):
        cli.main('box', fv, progress=False)


def test_box_run_with_an_empty_seed_logs_the_skipped_terms_writes_a_label_and_skips_it_next_time(synthetic_voc,
                                                                                                  tmp_path):
    """An all-255 seed (no bg, no fg pixel) trains with both empty terms skipped (finite loss, else training
    stops), the label PNG is written, and a second run skips the existing output."""
    image_list, names = _one_image_list(synthetic_voc, tmp_path)
    seeds = tmp_path / 'seeds'
    save_png(str(seeds / (names[0] + '.png')), np.full((64, 64), 255, np.uint8))
    fv = _flags('box', synthetic_voc, ['--infer_list', image_list, '--seed_label_root', str(seeds),
                                       '--save_path', str(tmp_path / 'out')])
    messages = []
    from absl import logging
    original = logging.warning
    logging.warning = lambda fmt, *args: messages.append(fmt % args)
    try:
        written = cli.main('box', fv, progress=False)
    finally:
        logging.warning = original
    assert [os.path.basename(p) for p in written] == [names[0] + '.png']
    from PIL import Image
    label = np.array(Image.open(written[0]))
    assert label.shape == (64, 64) and label.dtype == np.uint8 and label.max() <= 20
    assert any('no background pixel' in m for m in messages)
    assert any('no foreground pixel' in m for m in messages)
    assert cli.main('box', fv, progress=False) == []  # exists: skipped


@pytest.mark.slow
def test_killed_run_resumes_without_redoing_finished_images(synthetic_voc, tmp_path):
    image_list, names = _one_image_list(synthetic_voc, tmp_path, count=2)
    out = tmp_path / 'out'
    voc = os.path.join(synthetic_voc, 'VOCdevkit', 'VOC2012')
    cmd = [sys.executable, '-m', 'a2gnn.train_infer_others', '--voc12_root', voc, '--infer_list', image_list,
           '--seed_label_root', os.path.join(synthetic_voc, 'data', 'Init_Label', 'SEAM_Image'),
           '--save_path', str(out), *TINY]
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get('PYTHONPATH', ''))
    first = out / (names[0] + '.png')
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not first.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert first.exists()
    finished_at = first.stat().st_mtime_ns
    assert not [p for p in os.listdir(out) if p.startswith('.') or p.endswith('.tmp')]  # no partial files
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    assert first.stat().st_mtime_ns == finished_at
    assert (out / (names[1] + '.png')).exists()


def test_from_scratch_net_is_reproducible_per_seed_with_distinct_layers():
    """The from-scratch gated net depends only on its seed (affinitynet's default initializer took a seed drawn
    at import, before any set_random_seed: every process started differently) and same-shape layers differ."""
    def weights(seed):
        net = cli.build_net('', 0.0625, seed)
        net(np.zeros((1, 16, 16, 3), np.float32), radius=1)
        return {v.path: v.numpy() for v in net.weights}

    first, again, other = weights(0), weights(0), weights(1)
    assert first.keys() == again.keys()
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not all(np.array_equal(first[k], other[k]) for k in first)
    kernels = [v for k, v in first.items() if k.endswith('kernel') and 'b4_' in k and v.std() > 0]
    same_shape = [(a, b) for i, a in enumerate(kernels) for b in kernels[i + 1:] if a.shape == b.shape]
    assert same_shape and not any(np.array_equal(a, b) for a, b in same_shape)
