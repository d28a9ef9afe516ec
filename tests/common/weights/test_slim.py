"""TF-Slim checkpoint loader: restore by original name, exclude scopes, reporting, clear errors."""
import numpy as np
import pytest
import tensorflow as tf

from common.models.fcn import build_fcn
from common.models.naming import original_names
from common.weights.slim import load_slim_checkpoint


def _write_tf1_checkpoint(prefix, tensors):
    """A TF1 V2 name-keyed checkpoint (as tf.compat.v1.train.Saver writes) of {name: array}."""
    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names, shape_and_slices=[''] * len(names),
                      tensors=[tf.constant(tensors[n]) for n in names])
    return str(prefix)


@pytest.fixture(scope='module')
def tiny_fcn():
    return build_fcn(3, 48, backbone=dict(filters=(1, 2, 4, 8), num_blocks=(1, 1, 1, 1)))


def test_restores_by_name_with_exclude_scopes_and_reports(tiny_fcn, tmp_path):
    rng = np.random.default_rng(0)
    variables = original_names(tiny_fcn.variables)
    tensors = {name: rng.normal(size=v.shape).astype(np.float32) for name, v in variables.items()}
    dropped = 'resnet_v1_101/block2/unit_1/bottleneck_v1/conv2/BatchNorm/gamma'
    del tensors[dropped]
    tensors['global_step'] = np.int64(7)
    tensors['resnet_v1_101/logits/weights'] = np.zeros((1, 1, 32, 1000), np.float32)
    prefix = _write_tf1_checkpoint(tmp_path / 'model.ckpt-7', tensors)
    before = {name: v.numpy().copy() for name, v in variables.items()}

    restored, missing, unexpected = load_slim_checkpoint(tiny_fcn, prefix, exclude_scopes=('block5',))

    block5 = {n for n in variables if 'block5' in n}
    assert block5 == {'resnet_v1_101/block5/fc1_voc12/weights', 'resnet_v1_101/block5/fc1_voc12/biases'}
    assert missing == [dropped]
    assert unexpected == ['global_step', 'resnet_v1_101/logits/weights']
    assert restored == sorted(set(variables) - block5 - {dropped})
    for name in restored:
        np.testing.assert_array_equal(variables[name].numpy(), tensors[name])
    for name in block5 | {dropped}:
        np.testing.assert_array_equal(variables[name].numpy(), before[name])

    # Without exclusions block5 is restored too; a directory with a `checkpoint` state file works.
    (tmp_path / 'checkpoint').write_text('model_checkpoint_path: "model.ckpt-7"\n')
    restored_all, _, _ = load_slim_checkpoint(tiny_fcn, tmp_path)
    assert set(restored_all) == set(restored) | block5
    np.testing.assert_array_equal(variables['resnet_v1_101/block5/fc1_voc12/biases'].numpy(),
                                  tensors['resnet_v1_101/block5/fc1_voc12/biases'])


def test_shape_mismatch_names_variable_shapes_and_checkpoint(tiny_fcn, tmp_path):
    variables = original_names(tiny_fcn.variables)
    tensors = {name: np.zeros(v.shape, np.float32) for name, v in variables.items()}
    tensors['resnet_v1_101/block5/fc1_voc12/weights'] = np.zeros((1, 1, 32, 21), np.float32)
    prefix = _write_tf1_checkpoint(tmp_path / 'bad.ckpt', tensors)
    with pytest.raises(ValueError) as err:
        load_slim_checkpoint(tiny_fcn, prefix)
    message = str(err.value)
    for part in ('resnet_v1_101/block5/fc1_voc12/weights', '(1, 1, 32, 3)', '(1, 1, 32, 21)', 'bad.ckpt'):
        assert part in message
    # the same checkpoint loads when the mismatching scope is excluded (--not-restore-classifier)
    _, missing, _ = load_slim_checkpoint(tiny_fcn, prefix, exclude_scopes=['block5'])
    assert missing == []


def test_missing_checkpoint_path_is_a_clear_error(tiny_fcn, tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.ckpt'):
        load_slim_checkpoint(tiny_fcn, tmp_path / 'nope.ckpt')
    with pytest.raises(FileNotFoundError, match='state file'):
        load_slim_checkpoint(tiny_fcn, tmp_path)
