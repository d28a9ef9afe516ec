"""tf.distribute strategy from flags.

The originals' multi-GPU scripts build towers by hand (aaf_segsort.md 3.4); here every training runs under a
`tf.distribute.Strategy`: per-replica batches come from `strategy.distribute_datasets_from_function`, gradients are
SUMmed across replicas and losses are scaled by the global batch (see `engine.py`). Synchronized batch norm is the
model's business (Keras `BatchNormalization(synchronized=True)` or the project's TF1-style sync BN).

Several machines (`--strategy multi_worker`): `MultiWorkerMirroredStrategy` reads the cluster from `TF_CONFIG` and
must configure the collective ops BEFORE the TensorFlow runtime starts -- before anything lists devices, builds a
model or creates a tensor. `strategy_from_flags` therefore makes the multi-worker (and TPU) strategies before it
looks at any device; training CLIs call it first. Only the chief writes checkpoints, summaries and the run config
(`is_chief`); the other workers write their (identical) checkpoints to a temporary folder (`worker_write_dir`) and
delete it, as tf.distribute's multi-worker tutorial prescribes, and read the chief's checkpoints to resume.
"""
import json
import os

import tensorflow as tf

STRATEGIES = ('auto', 'one_device', 'mirrored', 'multi_worker', 'tpu')

# One strategy per (kind, devices) and process: a second MirroredStrategy over the same devices restarts the
# collective instance keys, and TF then rejects its all-reduces ("Shape mismatch in the collective instance ...")
# because the runtime remembers the shapes of the first strategy's collectives under the same keys.
_CACHE = {}


def make_strategy(num_gpus=None, strategy='auto', tpu_address=None, devices=None, reuse=True):
    """Builds a distribution strategy.

    Args:
      num_gpus: number of GPUs to use (None = all visible). AAF `--num-gpu`.
      strategy: 'auto' (TPU if `tpu_address` is given, MirroredStrategy if more than one device is used, else one
        device), 'one_device', 'mirrored', 'multi_worker' (MultiWorkerMirroredStrategy; cluster from TF_CONFIG) or
        'tpu'.
      tpu_address: TPU name/address for TPUClusterResolver ('' = local TPU VM).
      devices: explicit device list (overrides `num_gpus`), e.g. ['/cpu:0', '/cpu:1'] for tests on logical CPUs.
      reuse: return the strategy made earlier in this process for the same kind and devices (see `_CACHE`);
        False builds a new, uncached one.
    Returns:
      tf.distribute.Strategy.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f'--strategy: unknown strategy {strategy!r}; use one of {STRATEGIES}')
    if strategy == 'auto' and tpu_address is not None:
        strategy = 'tpu'
    if strategy == 'tpu':
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address or '')
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if strategy == 'multi_worker':
        return _multi_worker_strategy(reuse)

    if devices is None:
        gpus = [d.name for d in tf.config.list_logical_devices('GPU')]
        if num_gpus is not None:
            if num_gpus < 0:
                raise ValueError(f'--num-gpu must be >= 0, got {num_gpus}')
            if num_gpus > len(gpus):
                raise ValueError(f'--num-gpu={num_gpus} but only {len(gpus)} GPU(s) are visible')
            gpus = gpus[:num_gpus]
        devices = gpus or ['/cpu:0']
    devices = list(devices)
    if not devices:
        raise ValueError('make_strategy: empty device list')
    if strategy == 'auto':
        strategy = 'mirrored' if len(devices) > 1 else 'one_device'
    if strategy == 'one_device' and len(devices) != 1:
        raise ValueError(f"--strategy=one_device needs exactly one device, got {devices}")
    # Canonical device names, so '/cpu:0' and '/job:localhost/replica:0/task:0/device:CPU:0' share one strategy.
    key = (strategy, tuple(tf.DeviceSpec.from_string(d).make_merged_spec(
        tf.DeviceSpec(job='localhost', replica=0, task=0)).to_string() for d in devices))
    if reuse and key in _CACHE:
        return _CACHE[key]
    if strategy == 'one_device':
        made = tf.distribute.OneDeviceStrategy(devices[0])
    else:
        made = tf.distribute.MirroredStrategy(devices)
    if reuse:
        _CACHE[key] = made
    return made


def _multi_worker_strategy(reuse=True):
    """MultiWorkerMirroredStrategy over `TF_CONFIG` (one per process: the collectives are configured only once)."""
    tf_config = os.environ.get('TF_CONFIG', '')
    if tf_config:
        try:
            spec = json.loads(tf_config)
            workers = spec['cluster']['worker']
            task = spec['task']
            task_type, index = task['type'], int(task['index'])
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f'--strategy multi_worker: TF_CONFIG is not a valid cluster description ({err!r}); '
                             f'expected {{"cluster": {{"worker": ["host:port", ...]}}, "task": {{"type": "worker", '
                             f'"index": i}}}}, got {tf_config!r}') from None
        if task_type == 'worker' and not 0 <= index < len(workers):
            raise ValueError(f'--strategy multi_worker: TF_CONFIG task index {index} is outside the '
                             f'{len(workers)} workers of the cluster')
    key = ('multi_worker', tf_config)
    if reuse and key in _CACHE:
        return _CACHE[key]
    try:
        made = tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as err:
        if 'program startup' not in str(err):
            raise
        raise RuntimeError('--strategy multi_worker: the TensorFlow runtime was started before the strategy was made '
                           '(something listed devices, created a tensor or built a model first); make the strategy '
                           'first, e.g. with common.train.strategy.strategy_from_flags') from err
    if reuse:
        _CACHE[key] = made
    return made


def strategy_from_flags(num_gpu=None, strategy='auto', tpu_address=None):
    """The strategy of a training CLI's `--num-gpu` / `--strategy` flags; call it before anything touches devices.

    Multi-worker and TPU strategies are made before any device is listed (both must configure the runtime at
    start-up). Otherwise a machine without GPUs trains on its CPU whatever `--num-gpu` says (the synthetic and
    CPU runs).

    Args:
      num_gpu: GPUs per machine (`--num-gpu`); ignored for 'multi_worker' (every local GPU, else the CPU) and 'tpu'.
      strategy: one of STRATEGIES.
      tpu_address: TPU name/address ('tpu' or 'auto').
    Returns:
      tf.distribute.Strategy.
    """
    if strategy in ('multi_worker', 'tpu') or (strategy == 'auto' and tpu_address is not None):
        return make_strategy(strategy=strategy, tpu_address=tpu_address)
    if strategy not in STRATEGIES:
        raise ValueError(f'--strategy: unknown strategy {strategy!r}; use one of {STRATEGIES}')
    has_gpus = bool(tf.config.list_logical_devices('GPU'))
    return make_strategy(num_gpus=num_gpu if has_gpus else None, strategy=strategy, tpu_address=tpu_address)


def is_chief(strategy=None):
    """True in the process that writes checkpoints, summaries and configs (always, except non-chief workers).

    Uses the strategy's own answer (`StrategyExtended.should_checkpoint`): the 'chief' task, or worker 0 of a
    cluster without one.
    """
    strategy = strategy or tf.distribute.get_strategy()
    return bool(getattr(strategy.extended, 'should_checkpoint', True))


def worker_write_dir(directory, strategy=None):
    """Where this worker writes: `directory` on the chief, `<directory>/workertemp_<task id>` on the others.

    Every worker must take part in a save (a save may run collective ops); the non-chief copies go to a private
    temporary folder that the caller deletes afterwards (the multi-worker tutorial's `write_filepath`).
    """
    strategy = strategy or tf.distribute.get_strategy()
    if is_chief(strategy):
        return directory
    resolver = getattr(strategy, 'cluster_resolver', None)
    task_id = getattr(resolver, 'task_id', None) or 0
    return os.path.join(directory, f'workertemp_{task_id}')
