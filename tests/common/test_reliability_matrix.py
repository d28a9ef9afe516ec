"""Bad input for every command-line program: each cell runs the real CLI (`python -m <module> ...`) on one bad input
and checks that it stops with an error that names the file or flag and what is wrong -- not a traceback from deep
inside TensorFlow. Cells already covered by a program's own tests are not repeated here (README, Reliability).

All cells run once per session in subprocesses, two at a time (`results`); each test reads its cell's outcome.
"""
import concurrent.futures
import os
import re
import subprocess
import sys

import numpy as np
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REDUCED_PSPNET = ['--input-size=48,48', '--backbone-filters=4,8,8,16', '--backbone-blocks=1,1,1,1',
                  '--psp-channels=8']
PSA_TINY = ['--width_multiplier=0.0625']
OTHER_ARCH = (r"the checkpoint is of another architecture; 2 variable\(s\) differ in shape:\s+variable '\S+' has shape "
              r"\[1, 1, 8, \d+\] in the checkpoint but \[1, 1, 8, \d+\] in the model")


@pytest.fixture(scope='module')
def bad(tmp_path_factory, synthetic_voc):
    """Paths of the bad inputs (and of the good ones they sit next to)."""
    import tensorflow as tf

    from affinitynet import model as psa_model
    from common.models.factory import build_segmentation_model
    from common.models.naming import original_name
    from common.train import checkpoints as ckpt_lib

    tmp = tmp_path_factory.mktemp('reliability')
    paths = dict(voc=synthetic_voc, data=synthetic_voc + '/VOCdevkit/', root=synthetic_voc + '/VOCdevkit/VOC2012',
                 tmp=str(tmp))
    (tmp / 'file').write_text('a file, so nothing can be created below it (root ignores permission bits)\n')
    paths['unwritable'] = str(tmp / 'file' / 'sub')
    (tmp / 'missing.txt').write_text('VOC2012/JPEGImages/2099_000001.jpg VOC2012/segcls/2099_000001.png\n')
    labels = np.load(synthetic_voc + '/voc12/cls_labels.npy', allow_pickle=True).item()
    (tmp / 'psa_missing.txt').write_text(f'/JPEGImages/{sorted(labels)[0]}.jpg\n')
    (tmp / 'empty_root' / 'JPEGImages').mkdir(parents=True)
    paths['empty_root'] = str(tmp / 'empty_root')
    # a JPEG cut in half (header intact) under the id of the first PSA training image
    first = sorted(labels)[0]
    (tmp / 'cut_root' / 'JPEGImages').mkdir(parents=True)
    whole = open(os.path.join(paths['root'], 'JPEGImages', first + '.jpg'), 'rb').read()
    (tmp / 'cut_root' / 'JPEGImages' / (first + '.jpg')).write_bytes(whole[:len(whole) // 2])
    paths['cut_root'] = str(tmp / 'cut_root')
    # PSPNet checkpoints: 21 classes (AAF), an 8-d embedding (SegSort), and one without the head (block5)
    for name, channels in (('aaf', 21), ('segsort', 8)):
        tf.keras.utils.set_random_seed(0)
        model = build_segmentation_model('pspnet', channels, (48, 48), psp_channels=8, training=True,
                                         backbone={'filters': (4, 8, 8, 16), 'num_blocks': (1, 1, 1, 1)})
        ckpt_lib.make_checkpoint(model.variables).write(str(tmp / name / 'model.ckpt-0'))
        if name == 'segsort':
            backbone_only = [v for v in model.variables if 'block5' not in original_name(v)]
            ckpt_lib.make_checkpoint(backbone_only).write(str(tmp / 'backbone' / 'model.ckpt-0'))
    (tmp / 'prototypes').mkdir()
    np.save(tmp / 'prototypes' / 'prototype_features.npy', np.eye(4, 8, dtype=np.float32))
    np.save(tmp / 'prototypes' / 'prototype_labels.npy', np.arange(4, dtype=np.int32))
    psa_model.save_weights(psa_model.build_classifier('resnet38', 1 / 16), str(tmp / 'cls.npz'))
    return paths


def cells(p):
    """{cell id: (module or script, argv, expected error regex)}."""
    voc, data, root, tmp, unw = p['voc'], p['data'], p['root'], p['tmp'], p['unwritable']
    val, train = f'{voc}/dataset/voc12/val.txt', f'{voc}/dataset/voc12/train+.txt'
    psa_val, psa_train, cls_labels = f'{voc}/voc12/val.txt', f'{voc}/voc12/train_aug.txt', f'{voc}/voc12/cls_labels.npy'
    unwritable = lambda flag: rf'{flag} {re.escape(unw)}: cannot write to the output folder'  # noqa: E731
    segsort_train = ['--data_dir=' + data, '--data_list=' + train, '--num_steps=1', '--batch_size=1',
                     '--embedding_dim=8', '--num_clusters=2', '--noprogress'] + REDUCED_PSPNET
    cls_train = [f'--voc12_root={root}', f'--train_list={psa_train}', f'--cls_labels={cls_labels}',
                 '--network=network.resnet38', '--crop_size=64', '--batch_size=1', '--max_steps=1'] + PSA_TINY
    return {
        'aaf.inference-unwritable-save-dir': (
            'aaf.inference', [f'--data-dir={data}', f'--data-list={val}', f'--restore-from={tmp}/aaf/model.ckpt-0',
                              f'--save-dir={unw}'] + REDUCED_PSPNET, unwritable('--save-dir')),
        'segsort.train-checkpoint-of-other-architecture': (
            'segsort.train', segsort_train + [f'--restore_from={tmp}/aaf/model.ckpt-0', f'--snapshot_dir={tmp}/s1'],
            OTHER_ARCH),
        'segsort.train-restore-leaves-layers-untrained': (
            'segsort.train', segsort_train + [f'--restore_from={tmp}/backbone/model.ckpt-0',
                                              f'--snapshot_dir={tmp}/s2'],
            r'--restore-from \S+backbone/model.ckpt-0: \d+ model variable\(s\) are not in the checkpoint and would '
            r'stay uninitialised .*--allow-partial-restore.*block5'),
        'segsort.train_unsup-unwritable-snapshot-dir': (
            'segsort.train_unsup', ['--data_dir=' + data, '--data_list=' + train, '--num_steps=1', '--batch_size=1',
                                    '--embedding_dim=8', '--noprogress', f'--snapshot_dir={unw}'] + REDUCED_PSPNET,
            unwritable('--snapshot-dir')),
        'segsort.extract_prototypes-unwritable-save-dir': (
            'segsort.extract_prototypes', [f'--data_dir={data}', f'--data_list={train}', '--embedding_dim=8',
                                           f'--restore_from={tmp}/segsort/model.ckpt-0', f'--save_dir={unw}']
            + REDUCED_PSPNET, unwritable('--save_dir')),
        'segsort.extract_prototypes-checkpoint-of-other-architecture': (
            'segsort.extract_prototypes', [f'--data_dir={data}', f'--data_list={train}', '--embedding_dim=8',
                                           f'--restore_from={tmp}/aaf/model.ckpt-0', f'--save_dir={tmp}/p']
            + REDUCED_PSPNET, OTHER_ARCH),
        'segsort.inference-unwritable-save-dir': (
            'segsort.inference', [f'--data_dir={data}', f'--data_list={val}', '--embedding_dim=8',
                                  '--num_clusters=2', '--k_in_nearest_neighbors=1',
                                  f'--restore_from={tmp}/segsort/model.ckpt-0',
                                  f'--prototype_dir={tmp}/prototypes', f'--save_dir={unw}'] + REDUCED_PSPNET,
            unwritable('--save_dir')),
        'segsort.overseg-missing-image': (
            'segsort.overseg', [f'--data_dir={data}', f'--data_list={tmp}/missing.txt', f'--hed_dir={tmp}/hed'],
            r'missing.txt: image file not found: \S+/JPEGImages/2099_000001.jpg'),
        'affinitynet.make_cls_labels-no-annotations': (
            'affinitynet.make_cls_labels', [f'--voc12_root={tmp}/nowhere'],
            r'--voc12_root: \S+/nowhere has no Annotations/ directory'),
        'affinitynet.make_cls_labels-unwritable-out': (
            'affinitynet.make_cls_labels', [f'--voc12_root={root}', f'--train_list={psa_train}',
                                            f'--val_list={psa_val}', f'--out={unw}/cls_labels.npy'],
            unwritable('--out')),
        'affinitynet.train_cls-missing-weights': (
            'affinitynet.train_cls', cls_train + [f'--weights={tmp}/none.npz', f'--session_name={tmp}/c1'],
            r'--weights: file not found: \S+/none.npz'),
        'affinitynet.train_cls-weights-of-other-width': (
            'affinitynet.train_cls', cls_train[:-1] + ['--width_multiplier=0.125', f'--weights={tmp}/cls.npz',
                                                       f'--session_name={tmp}/c2'],
            r"--weights \S+/cls.npz: shape mismatch for 'conv1a.weight': PyTorch tensor \(4, 3, 3, 3\) cannot be "
            r"loaded into the Keras variable of shape \(3, 3, 3, 8\)"),
        'affinitynet.train_cls-missing-image': (
            'affinitynet.train_cls', cls_train[1:] + [f'--voc12_root={p["empty_root"]}', '--weights=',
                                                      f'--train_list={tmp}/psa_missing.txt',
                                                      f'--session_name={tmp}/c3'],
            r'psa_missing.txt line 1: image file not found: \S+/empty_root/JPEGImages/\d+_\d+.jpg'),
        'affinitynet.infer_cls-truncated-image': (
            'affinitynet.infer_cls', [f'--voc12_root={p["cut_root"]}', f'--infer_list={tmp}/psa_missing.txt',
                                      f'--cls_labels={cls_labels}', f'--weights={tmp}/cls.npz',
                                      '--network=network.resnet38_cls', f'--out_cam={tmp}/cam3'] + PSA_TINY,
            r'image \S+/cut_root/JPEGImages/\d+_\d+.jpg cannot be read: image file is truncated'),
        'affinitynet.train_cls-unwritable-session-name': (
            'affinitynet.train_cls', cls_train + ['--weights=', f'--session_name={unw}/cls',
                                                  f'--snapshot_dir={tmp}/c4'], unwritable('--session_name')),
        'affinitynet.infer_cls-unwritable-out-cam': (
            'affinitynet.infer_cls', [f'--voc12_root={root}', f'--infer_list={psa_val}', f'--cls_labels={cls_labels}',
                                      f'--weights={tmp}/cls.npz', '--network=network.resnet38_cls',
                                      f'--out_cam={unw}'] + PSA_TINY, unwritable('--out_cam')),
        'affinitynet.infer_cls-missing-image': (
            'affinitynet.infer_cls', [f'--voc12_root={p["empty_root"]}', f'--infer_list={tmp}/psa_missing.txt',
                                      f'--cls_labels={cls_labels}', f'--weights={tmp}/cls.npz',
                                      '--network=network.resnet38_cls', f'--out_cam={tmp}/cam'] + PSA_TINY,
            r'image not found: \S+/empty_root/JPEGImages/\d+_\d+.jpg'),
        'affinitynet.train_aff-crop-size': (
            'affinitynet.train_aff', [f'--voc12_root={root}', f'--train_list={psa_train}', '--weights=',
                                      f'--la_crf_dir={tmp}/la', f'--ha_crf_dir={tmp}/ha', '--crop_size=100'],
            r'--crop_size: must be a multiple of 8, got 100'),
        'affinitynet.train_aff-missing-crf': (
            'affinitynet.train_aff', [f'--voc12_root={root}', f'--train_list={psa_train}', '--weights=',
                                      '--network=network.resnet38_aff', f'--la_crf_dir={tmp}/la',
                                      f'--ha_crf_dir={tmp}/ha', '--crop_size=96', f'--session_name={tmp}/a1']
            + PSA_TINY, r'train_aug.txt line 1: la CRF file not found: \S+/la/\d+_\d+.npy'),
        'affinitynet.infer_aff-unwritable-out-rw': (
            'affinitynet.infer_aff', [f'--voc12_root={root}', f'--infer_list={psa_val}', f'--weights={tmp}/cls.npz',
                                      f'--cam_dir={tmp}/cam', f'--out_rw={unw}'], unwritable('--out_rw')),
        'affinitynet.evaluate-unwritable-out-dir': (
            'affinitynet.evaluate', [f'--list={psa_val}', f'--voc12_root={root}',
                                     f'--pred_dir={root}/SegmentationClassAug', f'--out_dir={unw}'],
            unwritable('--out_dir')),
        'a2gnn.infer_seam-missing-weights': (
            'a2gnn.infer_seam', [f'--voc12_root={root}', f'--infer_list={psa_val}', f'--cls_labels={cls_labels}',
                                 f'--weights={tmp}/none.npz', f'--out_cam={tmp}/seam'] + PSA_TINY,
            r'--weights: file not found: \S+/none.npz'),
        'a2gnn.infer_seam-unwritable-out-cam': (
            'a2gnn.infer_seam', [f'--voc12_root={root}', f'--infer_list={psa_val}', f'--cls_labels={cls_labels}',
                                 f'--weights={tmp}/none.npz', f'--out_cam={unw}'] + PSA_TINY,
            unwritable('--out_cam')),
        'a2gnn.train_gated_aff-missing-label-dir': (
            'a2gnn.train_gated_aff', [f'--voc12_root={root}', f'--train_list={psa_train}', '--weights=',
                                      f'--label_dir={tmp}/nolabels', f'--session_name={tmp}/g'],
            r'--label_dir: no such directory: \S+/nolabels'),
        'a2gnn.train_infer_box-missing-seed-folder': (
            'a2gnn.train_infer_box', [f'--voc12_root={root}', f'--infer_list={psa_val}', '--weights=',
                                      f'--seed_label_root={tmp}/noseeds', f'--save_path={tmp}/box'],
            r'--seed_label_root: no such directory: \S+/noseeds'),
        'a2gnn.train_infer_others-unwritable-save-path': (
            'a2gnn.train_infer_others', [f'--voc12_root={root}', f'--infer_list={psa_val}', '--weights=',
                                         f'--seed_label_root={root}/SegmentationClassAug', f'--save_path={unw}'],
            unwritable('--save_path')),
        'benchmarks.aaf_loss-malformed-shape': (
            'benchmarks/aaf_loss.py', ['--shapes', '8,42,42', '--repeats=1'],
            r"--shapes: each shape must be N,H,W,C integers, got \['8,42,42'\]"),
        'benchmarks.aaf_train_step-unknown-network': (
            'benchmarks/aaf_train_step.py', ['--networks', 'resnet'],
            r"argument --networks: invalid choice: 'resnet'"),
        'common.infer.export-checkpoint-of-other-architecture': (
            'common.infer.export', [f'--checkpoint={tmp}/segsort/model.ckpt-0', f'--out={tmp}/export']
            + REDUCED_PSPNET, OTHER_ARCH),
    }


CELL_IDS = sorted(cells(dict(voc='', data='', root='', tmp='', unwritable='', empty_root='', cut_root='')))


def _run(module, argv):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''),
               TF_CPP_MIN_LOG_LEVEL='2', CUDA_VISIBLE_DEVICES='-1')
    command = [sys.executable, module] if module.endswith('.py') else [sys.executable, '-m', module]
    proc = subprocess.run(command + argv, capture_output=True, text=True, timeout=300,
                          env=env, cwd=REPO_ROOT)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope='module')
def results(request, bad):
    """{cell: (expected regex, return code, output)} of the cells selected in this session."""
    selected = {item.callspec.params['cell'] for item in request.session.items
                if item.module is request.module and hasattr(item, 'callspec')}
    table = {cell: value for cell, value in cells(bad).items() if cell in selected}
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {cell: pool.submit(_run, module, argv) for cell, (module, argv, _) in table.items()}
        return {cell: (table[cell][2],) + future.result() for cell, future in futures.items()}


def last_error(output):
    """The last line of a Python traceback (or absl's usage error): what the user reads."""
    lines = [line for line in output.splitlines() if line.strip()]
    for index in range(len(lines) - 1, -1, -1):
        if re.match(r'^[\w.]*(Error|Exception)\b', lines[index]) or lines[index].startswith('FATAL'):
            return '\n'.join(lines[index:])
    return '\n'.join(lines[-5:])


@pytest.mark.parametrize('cell', CELL_IDS)
def test_bad_input_is_named(results, cell):
    expected, returncode, output = results[cell]
    assert returncode != 0, output[-3000:]
    assert re.search(expected, output, re.S), output[-3000:]
    # the answer is a clear error, not one raised from inside TensorFlow's runtime
    assert 'tensorflow.python.framework.errors_impl' not in last_error(output), output[-3000:]
