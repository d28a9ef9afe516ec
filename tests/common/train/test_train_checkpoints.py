"""Name-based checkpoints: key escaping, partial restore with exclude scopes, config files, clear errors."""
import json

import numpy as np
import pytest
import tensorflow as tf

from common.models.naming import set_original_name
from common.train import checkpoints as ck

NAMES = ['resnet_v1_101/conv1/weights', 'resnet_v1_101/conv1/BatchNorm/moving_mean',
         'resnet_v1_101/block5/fc1_voc12/weights', 'layer.with.dots/kernel']


def _vars(seed, names=NAMES, shapes=None):
    rng = np.random.RandomState(seed)
    out = []
    for i, name in enumerate(names):
        shape = shapes[i] if shapes else (2, 3)
        v = tf.Variable(rng.randn(*shape).astype(np.float32))
        set_original_name(v, name)
        out.append(v)
    return out


def test_keys_follow_tf_escaping(tmp_path):
    variables = _vars(0)
    path = ck.make_checkpoint(variables, step=tf.Variable(3, dtype=tf.int64)).save(str(tmp_path / 'model.ckpt'))
    keys = {k for k, _ in tf.train.list_variables(path)}
    for name in NAMES:
        assert ck.variable_key(name) in keys
    assert ck.is_object_checkpoint(path)


def test_partial_restore_with_exclude_scopes(tmp_path):
    saved = _vars(0)
    ck.make_checkpoint(saved).save(str(tmp_path / 'model.ckpt'))
    extra = _vars(5, names=['not/in/ckpt/weights'])
    target = _vars(1) + extra
    before = [v.numpy() for v in target]
    restored, missing, unexpected = ck.restore_variables(target, str(tmp_path), exclude_scopes=('block5',))
    assert sorted(restored) == sorted(n for n in NAMES if 'block5' not in n)
    assert missing == ['not/in/ckpt/weights']
    assert unexpected == [ck.escape_key('resnet_v1_101/block5/fc1_voc12/weights')]
    for v, s, b, name in zip(target, saved, before, NAMES):
        np.testing.assert_array_equal(v.numpy(), b if 'block5' in name else s.numpy())
    np.testing.assert_array_equal(extra[0].numpy(), before[-1])


def test_restore_errors_name_the_flag(tmp_path):
    with pytest.raises(FileNotFoundError, match='--restore-from'):
        ck.restore_variables(_vars(0), str(tmp_path / 'nothing'))
    with pytest.raises(FileNotFoundError, match='contains no checkpoint'):
        ck.restore_variables(_vars(0), str(tmp_path))
    path = ck.make_checkpoint(_vars(0)).save(str(tmp_path / 'model.ckpt'))
    wrong = _vars(2, shapes=[(3, 3)] * 4)
    with pytest.raises(ValueError, match='shape'):
        ck.restore_variables(wrong, path)


def test_slim_checkpoint_needs_the_model(golden_dir):
    prefix = str(golden_dir / 'aaf_segsort' / 'resnet_v1_small_ckpt' / 'model.ckpt')
    assert not ck.is_object_checkpoint(prefix)
    with pytest.raises(ValueError, match='Slim'):
        ck.restore_variables(_vars(0), prefix)


def test_save_config_formats(tmp_path):
    ck.save_config(str(tmp_path / 'snap'), {'batch_size': 8, 'restore_from': '', 'exclude_scopes': ('block5',)})
    text = (tmp_path / 'snap' / 'config').read_text()
    assert text == "| batch_size = 8\n| restore_from = \n| exclude_scopes = ('block5',)\n"
    assert json.loads((tmp_path / 'snap' / 'config.json').read_text())['exclude_scopes'] == ['block5']
    assert sorted(p.name for p in (tmp_path / 'snap').iterdir()) == ['config', 'config.json']  # no temp files left


def test_shape_mismatches_are_all_listed_and_nothing_assigned(tmp_path):
    path = ck.make_checkpoint(_vars(0)).save(str(tmp_path / 'model.ckpt'))
    wrong = _vars(2, shapes=[(3, 3), (2, 3), (3, 3), (2, 3)])
    before = [v.numpy() for v in wrong]
    with pytest.raises(ck.RestoreError, match=r'another architecture; 2 variable\(s\) differ in shape') as err:
        ck.restore_variables(wrong, path)
    for name in (NAMES[0], NAMES[2]):
        assert f"variable '{name}' has shape [2, 3] in the checkpoint but [3, 3] in the model" in str(err.value)
    for v, b in zip(wrong, before):
        np.testing.assert_array_equal(v.numpy(), b)


def test_check_all_restored_lists_missing_and_checkpoint_step(tmp_path):
    ck.check_all_restored('ckpt', [])
    with pytest.raises(ck.RestoreError, match=r'ckpt: 2 model variable\(s\) are not in the checkpoint') as err:
        ck.check_all_restored('ckpt', ['b/weights', 'a/weights'])
    assert str(err.value).endswith('\n  a/weights\n  b/weights')
    path = ck.make_checkpoint(_vars(0), step=tf.Variable(7, dtype=tf.int64)).save(str(tmp_path / 'with_step'))
    assert ck.checkpoint_step(path) == 7
    assert ck.checkpoint_step(ck.make_checkpoint(_vars(0)).save(str(tmp_path / 'without'))) is None
