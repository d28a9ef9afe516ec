"""`--strategy multi_worker` on real processes: 2 workers on localhost (TF_CONFIG, one CPU replica each).

For every trainer in TRAINERS (AAF in its three modes, supervised SegSort, AffinityNet's train_cls and train_aff) one
cluster launch runs all its trainings in the same two worker processes, and (cases with `kill`) worker 1 SIGKILLs
itself in the middle of the last one, after the chief wrote a checkpoint. The same command is then launched again.
The tests check that
  * every training ends with the weights (the baseline's synchronized batch-norm statistics and AAF's adversarial
    weights included) of a single-process run with the same global batch -- for the killed training that is the
    weights of an uninterrupted run, reached by resuming from the chief's last checkpoint;
  * only the chief wrote into the snapshot folder (checkpoints, config, TensorBoard events); nothing of the other
    worker's temporary checkpoint folders is left.

The data list holds exactly one global batch of images (no random augmentation, `--deterministic` data order), so
every step of every run sees the same images whatever the sharding across workers: multi-worker and single-process
runs are comparable. (Without `--deterministic` the parallel map may hand out an image of the next epoch first, and a
global batch may hold an image twice.) PSA's trainers augment every sample at random; `--layout_independent_data`
seeds each sample by (seed, epoch, list position), so both workers together draw the samples one process draws.

Adding a trainer: a `TrainerCase` with its CLI module and a function returning [(name, argv), ...] for tiny runs that
save at step SAVE_EVERY and at the last step (see tests/multi_worker_harness.py for the module contract).
"""
import dataclasses
import glob
import os
import re
from typing import Callable

import numpy as np
import pytest
import tensorflow as tf

from multi_worker_harness import Kill, run_cluster

pytestmark = pytest.mark.slow

NUM_WORKERS = 2
GLOBAL_BATCH = 4
NUM_STEPS = 5          # steps 0..4
SAVE_EVERY = 2         # checkpoints after steps 2 and 4
KILL_AFTER_STEP = 3    # worker 1 dies after step 3: the chief's last checkpoint is model.ckpt-2
REDUCED_PSPNET = ['--backbone-filters=4,8,8,16', '--backbone-blocks=1,1,1,1', '--psp-channels=8']
KLD = ['--kld-margin=3.0', '--kld-lambda-1=1.0', '--kld-lambda-2=1.0']


def one_batch_list(voc_root, folder, count=GLOBAL_BATCH, source=('dataset', 'voc12', 'train+.txt')):
    """A list file with the first `count` lines of a synthetic VOC training list (AAF/SegSort or PSA format)."""
    with open(os.path.join(voc_root, *source)) as handle:
        lines = handle.read().splitlines()[:count]
    path = os.path.join(folder, 'one_batch_' + source[-1])
    with open(path, 'w') as handle:
        handle.write('\n'.join(lines) + '\n')
    return path


def schedule(steps_flag, save_flag):
    return [f'--{steps_flag}={NUM_STEPS}', f'--{save_flag}={SAVE_EVERY}']


def aaf_runs(voc_root, root):
    data_list = one_batch_list(voc_root, root)
    snapshot_root = os.path.join(root, 'cluster')
    common = [f'--data-dir={voc_root}/VOCdevkit/', f'--data-list={data_list}', f'--batch-size={GLOBAL_BATCH}',
              '--input-size=48,48', '--iter-size=1', '--is-training', '--learning-rate=1e-2',
              '--update-tb-every=1000', '--random-seed=0', '--noprogress', '--deterministic'] + REDUCED_PSPNET
    common += schedule('num-steps', 'save-pred-every')
    # baseline trains batch norm (synchronized across the workers) and is the training a worker gets killed in.
    # affinity / aaf add their loss terms with batch norm frozen (--use-global-status): each synchronized BN layer
    # adds collectives (forward and backward) to trace, which on 2 busy CPU cores takes minutes per training.
    frozen_bn = KLD + ['--use-global-status']
    return [(mode, [f'--mode={mode}', f'--snapshot-dir={snapshot_root}/{mode}'] + common
             + (frozen_bn if mode != 'baseline' else [])) for mode in ('affinity', 'aaf', 'baseline')]


def segsort_runs(voc_root, root):
    """Supervised SegSort, batch norm trained (synchronized): the loss of the all-gathered global batch.

    The original's BN decay (0.9997): with a fast decay (0.9) the moving mean of conv1, whose inputs are raw pixels
    minus the mean, differs by 3e-5 after 5 steps -- the float32 rounding of the batch moments summed per worker
    and then across workers instead of in one sum (moving statistics do not take part in the training forward).

    The TF loss ops on both sides (--loss-impl tf, what `auto` picks under MultiWorkerMirroredStrategy): with the C++
    kernels on both sides the weights came out up to 1e-3 apart (unexplained; see segsort.kernel._multi_worker).
    """
    data_list = one_batch_list(voc_root, root)
    return [('segsort', [f'--data-dir={voc_root}/VOCdevkit/', f'--data-list={data_list}',
                         f'--batch-size={GLOBAL_BATCH}', '--input-size=48,48', '--iter-size=1', '--is-training',
                         '--learning-rate=5e-3', '--update-tb-every=1000', '--random-seed=0', '--noprogress',
                         '--deterministic', '--embedding-dim=8', '--num-clusters=2', '--kmeans-iterations=3',
                         '--loss-impl=tf',
                         f'--snapshot-dir={root}/cluster/segsort']
                        + REDUCED_PSPNET + schedule('num-steps', 'save-pred-every'))]


def psa_common(voc_root, root, session):
    """Flags of a tiny PSA training (ResNet-38 at 1/16 width, from scratch, original frozen BN)."""
    data_list = one_batch_list(voc_root, root, source=('voc12', 'train_aug.txt'))
    return [f'--voc12_root={voc_root}/VOCdevkit/VOC2012', f'--train_list={data_list}', '--network=network.resnet38',
            '--width_multiplier=0.0625', '--weights=', f'--batch_size={GLOBAL_BATCH}', '--seed=0',
            '--layout_independent_data', f'--snapshot-dir={root}/cluster/{session}',
            f'--session_name={root}/cluster/{session}'] + schedule('max_steps', 'save_every')


def psa_cls_runs(voc_root, root):
    return [('train_cls', psa_common(voc_root, root, 'cls')
             + [f'--cls_labels={voc_root}/voc12/cls_labels.npy', '--crop_size=64', '--resize_long=56,72'])]


def psa_aff_runs(voc_root, root):
    from PIL import Image
    from affinitynet import cam as cam_lib
    from common.data.lists import load_img_name_list
    argv = psa_common(voc_root, root, 'aff')
    rng = np.random.default_rng(0)
    for name in load_img_name_list(next(a.split('=', 1)[1] for a in argv if a.startswith('--train_list='))):
        with Image.open(os.path.join(voc_root, 'VOCdevkit', 'VOC2012', 'JPEGImages', name + '.jpg')) as image:
            width, height = image.size
        for kind in ('la', 'ha'):
            p = rng.dirichlet([1, 1, 1], size=[height, width]).astype(np.float32)
            cam_lib.save_dict(os.path.join(root, kind, f'{name}.npy'), {0: p[..., 0], 4: p[..., 1], 9: p[..., 2]})
    return [('train_aff', argv + ['--network=network.resnet38_aff', f'--la_crf_dir={root}/la',
                                  f'--ha_crf_dir={root}/ha', '--crop_size=96'])]


def aaf_pending():
    """Why the affinity / AAF terms cannot equal the single-process loss yet, or '' once they can."""
    import inspect
    from aaf.losses import aaf_loss_terms
    if 'as_ratios' in inspect.signature(aaf_loss_terms).parameters:
        return ''
    return ('aff_loss / aaf_loss are means over each replica\'s pixel pairs weighted by its share of the images; '
            'they equal the global-batch loss once they reach the engine as (sum, count) pairs (issue #8)')


def train_in_process(module_name, argv):
    """Single-process reference run through the CLI's own entry points."""
    import importlib
    from absl import flags
    from common.cli import normalize_flag_names
    cli = importlib.import_module(module_name)
    flag_values = flags.FlagValues()
    cli.define_flags(flag_values)
    flag_values(normalize_flag_names([module_name] + list(argv)))
    cli.train_from_flags(flag_values)


def psa_frozen(key):
    """Checkpoint keys of the frozen batch-norm layers of ResNet-38 (the original does not train BN)."""
    return '.bn' in key or '/bn' in key


# The reduced ResNet-38 crashes oneDNN's CPU kernels in graph mode (see affinitynet/__init__.py).
NO_ONEDNN = {'TF_ENABLE_ONEDNN_OPTS': '0'}


@dataclasses.dataclass
class TrainerCase:
    module: str
    runs: Callable  # (voc_root, root) -> [(name, argv), ...]
    num_runs: int
    pending: Callable = lambda name: ''  # name -> reason a known gap makes the weights differ ('' = none)
    kill: bool = True  # worker 1 SIGKILLs itself in the last training, which is then restarted
    env: dict = dataclasses.field(default_factory=dict)
    reference_in_subprocess: bool = False  # single-process reference in a fresh process (with `env`)
    frozen: Callable = lambda key: 'BatchNorm' in key  # checkpoint keys the runs do not train
    no_dropout: bool = False  # dropout masks are drawn per replica: no layout of the batch reproduces them


TRAINERS = {
    'aaf': TrainerCase('aaf.train', aaf_runs, 3, lambda name: aaf_pending() if name != 'baseline' else ''),
    'segsort': TrainerCase('segsort.train', segsort_runs, 1),
    'train_cls': TrainerCase('affinitynet.train_cls', psa_cls_runs, 1, kill=False, env=NO_ONEDNN,
                             reference_in_subprocess=True, no_dropout=True, frozen=psa_frozen),
    'train_aff': TrainerCase('affinitynet.train_aff', psa_aff_runs, 1, kill=False, env=NO_ONEDNN,
                             reference_in_subprocess=True, no_dropout=True, frozen=psa_frozen),
}
RUNS = [(trainer, index) for trainer, case in sorted(TRAINERS.items()) for index in range(case.num_runs)]


def snapshot_of(argv):
    return next(a.split('=', 1)[1] for a in argv if a.startswith('--snapshot-dir='))


def model_variables(prefix):
    """{checkpoint key: value} of the model and extra variables (everything under `variables/`)."""
    reader = tf.train.load_checkpoint(prefix)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if k.startswith('variables/')}


_LAUNCHED = {}  # trainer -> cluster_runs result: every test of a trainer reads the same launches


@pytest.fixture
def cluster_runs(request, synthetic_voc, tmp_path_factory):
    """Launch 1 (worker 1 killed during the last training, if the case says so), launch 2 (the killed training's
    command again, on both workers), single-process references; once per trainer and session."""
    if request.param not in _LAUNCHED:
        _LAUNCHED[request.param] = launch(request.param, synthetic_voc, tmp_path_factory)
    return _LAUNCHED[request.param]


def launch(trainer, synthetic_voc, tmp_path_factory):
    case = TRAINERS[trainer]
    root = str(tmp_path_factory.mktemp(f'multi_worker_{trainer}'))
    runs = case.runs(synthetic_voc, root)
    assert len(runs) == case.num_runs
    argvs = [argv for _, argv in runs]
    kill = Kill(worker=1, run=len(runs) - 1, step=KILL_AFTER_STEP, marker=os.path.join(root, 'killed'))
    first = run_cluster(case.module, argvs, NUM_WORKERS, kill=kill if case.kill else None, timeout=900,
                        log_dir=os.path.join(root, 'launch1'), env=case.env,
                        no_dropout=case.no_dropout)
    latest_after_kill = second = None
    if case.kill:
        latest_after_kill = tf.train.latest_checkpoint(snapshot_of(argvs[-1]))
        second = run_cluster(case.module, argvs[-1:], NUM_WORKERS, timeout=900, log_dir=os.path.join(root, 'launch2'),
                             env=case.env, no_dropout=case.no_dropout)
    references, singles = {}, []
    for name, argv in runs:
        single = [a for a in argv if not a.startswith(('--snapshot-dir=', '--session_name='))]
        single.append(f'--snapshot-dir={root}/single/{name}')
        if any(a.startswith('--session_name=') for a in argv):
            single.append(f'--session_name={root}/single/{name}')
        singles.append(single)
        references[name] = f'{root}/single/{name}'
    reference_log = None
    if case.reference_in_subprocess:
        reference_log = run_cluster(case.module, singles, timeout=900, log_dir=os.path.join(root, 'single_log'),
                                    env=case.env, single_process=True, no_dropout=case.no_dropout)
        assert reference_log.returncodes == [0], reference_log.describe()
    else:
        for single in singles:
            train_in_process(case.module, single)
    references = {name: tf.train.latest_checkpoint(folder) for name, folder in references.items()}
    return dict(runs=runs, first=first, second=second, latest_after_kill=latest_after_kill,
                references=references, marker=kill.marker, case=case)


@pytest.mark.parametrize('cluster_runs', [t for t, case in sorted(TRAINERS.items()) if case.kill], indirect=True)
def test_killed_worker_and_restart(cluster_runs):
    first, second, runs = cluster_runs['first'], cluster_runs['second'], cluster_runs['runs']
    assert os.path.exists(cluster_runs['marker']), first.describe()
    assert first.returncodes[1] == -9, first.describe()  # SIGKILL
    # The earlier trainings finished in launch 1; the killed one had only its step-2 checkpoint.
    assert [r['last_step'] for r in first.reports(0)] == [NUM_STEPS - 1] * (len(runs) - 1), first.describe()
    assert cluster_runs['latest_after_kill'].endswith(f'model.ckpt-{SAVE_EVERY}')
    # Launch 2: every worker exits 0; the killed training resumes after step 2 and runs to the end.
    assert second.returncodes == [0] * NUM_WORKERS, second.describe()
    for worker in range(NUM_WORKERS):
        (report,) = second.reports(worker)
        assert (report['first_step'], report['last_step']) == (SAVE_EVERY + 1, NUM_STEPS - 1), second.describe()


@pytest.mark.parametrize('cluster_runs, run_index', RUNS, indirect=['cluster_runs'])
def test_weights_equal_single_process(cluster_runs, run_index):
    """Synchronized BN, every loss term and (for the last run) kill-and-resume: weights of the single process."""
    name, argv = cluster_runs['runs'][run_index]
    final = tf.train.latest_checkpoint(snapshot_of(argv))
    assert final.endswith(f'model.ckpt-{NUM_STEPS - 1}')
    got, want = model_variables(final), model_variables(cluster_runs['references'][name])
    assert sorted(got) == sorted(want)
    try:
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-5, err_msg=f'{name}: {key}')
    except AssertionError:
        reason = cluster_runs['case'].pending(name)
        if reason:
            pytest.xfail(reason)
        raise
    # The comparison can fail: the runs moved the weights away from the step-2 checkpoint. Batch-norm variables
    # are left out of the count: the affinity / aaf runs freeze them (--use-global-status).
    early = model_variables(os.path.join(snapshot_of(argv), f'model.ckpt-{SAVE_EVERY}'))
    learned = [k for k in want if not cluster_runs['case'].frozen(k)]
    initial_moved = sum(not np.allclose(early[k], want[k], atol=1e-5) for k in learned)
    assert initial_moved > len(learned) // 2


@pytest.mark.parametrize('cluster_runs', sorted(TRAINERS), indirect=True)
def test_only_the_chief_writes(cluster_runs):
    chief_pids = {launch.pids[0] for launch in (cluster_runs['first'], cluster_runs['second']) if launch}
    for name, argv in cluster_runs['runs']:
        snapshot = snapshot_of(argv)
        assert not glob.glob(os.path.join(snapshot, 'workertemp_*')), os.listdir(snapshot)
        events = glob.glob(os.path.join(snapshot, 'events.out.tfevents.*'))
        assert events
        writer_pids = {int(re.search(r'\.(\d+)\.\d+\.v2$', path).group(1)) for path in events}
        assert writer_pids <= chief_pids, (name, writer_pids, chief_pids)
        assert os.path.exists(os.path.join(snapshot, 'config.json'))
