"""Shared pytest fixtures: golden-case loading and CPU-only, quiet TensorFlow."""
import json
import os
import pathlib

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np
import pytest

GOLDEN_DIR = pathlib.Path(__file__).parent / 'golden'


def load_golden(name, folder='aaf_segsort'):
    """Returns (inputs, outputs, manifest_case) of a golden case; keys lose their `in_`/`out_` prefix."""
    root = GOLDEN_DIR / folder
    manifest = json.loads((root / 'manifest.json').read_text())
    case = next(c for c in manifest['cases'] if c['file'] in (name, name + '.npz'))
    z = np.load(root / case['file'])
    ins = {k[3:]: z[k] for k in z.files if k.startswith('in_')}
    outs = {k[4:]: z[k] for k in z.files if k.startswith('out_')}
    return ins, outs, case


def assert_golden(actual, expected, tolerance):
    """Compares one array with a golden array under the manifest's tolerance entry."""
    if tolerance.get('exact'):
        np.testing.assert_array_equal(np.asarray(actual), expected)
    else:
        np.testing.assert_allclose(np.asarray(actual, expected.dtype), expected, rtol=tolerance['rtol'],
                                   atol=tolerance['atol'], equal_nan=tolerance.get('equal_nan', False))


def _split_cpu():
    """Two logical CPU devices, so multi-replica tests can run MirroredStrategy on one CPU."""
    import tensorflow as tf
    cpus = tf.config.list_physical_devices('CPU')
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    except RuntimeError:  # TensorFlow was initialised before conftest ran; keep its devices.
        pass


_split_cpu()


@pytest.fixture(scope='session')
def golden():
    """`golden(name, folder='aaf_segsort')` -> (inputs, outputs, manifest case)."""
    return load_golden


@pytest.fixture(name='assert_golden')
def assert_golden_fixture():
    """`assert_golden(actual, expected, tolerance_entry)`."""
    return assert_golden


@pytest.fixture(scope='session')
def golden_dir():
    return GOLDEN_DIR


@pytest.fixture(scope='session')
def synthetic_voc(tmp_path_factory):
    """Root of a small synthetic VOC set (24 images of 64 x 64, seed 0), generated once per test session."""
    from common.data.synthetic import generate
    root = tmp_path_factory.mktemp('synthetic_voc')
    generate('voc', str(root), num_images=24, seed=0, height=64, width=64)
    return str(root)


@pytest.fixture
def temporary_flags():
    """`temporary_flags(define_fn)` defines a CLI's flags on absl's global FLAGS for one test (define_fn() does
    the defining) and removes the ones it added afterwards; returns FLAGS."""
    from absl import flags
    before = set(flags.FLAGS)

    def define(define_fn):
        define_fn()
        return flags.FLAGS

    yield define
    flags.FLAGS.unparse_flags()
    for name in set(flags.FLAGS) - before:
        delattr(flags.FLAGS, name)
