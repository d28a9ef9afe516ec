"""tf.distribute strategy from flags.

The originals' multi-GPU scripts build towers by hand (aaf_segsort.md 3.4); here every training runs under a
`tf.distribute.Strategy`: per-replica batches come from `strategy.distribute_datasets_from_function`, gradients are
SUMmed across replicas and losses are scaled by the global batch (see `engine.py`). Synchronized batch norm is the
model's business (Keras `BatchNormalization(synchronized=True)` or the project's TF1-style sync BN).
"""
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
        return tf.distribute.MultiWorkerMirroredStrategy()

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
