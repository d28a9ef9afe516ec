"""Strategy selection from flags (2 logical CPU devices from conftest)."""
import pytest
import tensorflow as tf

from common.train.strategy import make_strategy


def test_strategies_from_flags():
    mirrored = make_strategy(devices=['/cpu:0', '/cpu:1'])
    assert isinstance(mirrored, tf.distribute.MirroredStrategy) and mirrored.num_replicas_in_sync == 2
    one = make_strategy(devices=['/cpu:0'])
    assert isinstance(one, tf.distribute.OneDeviceStrategy)
    default = make_strategy(num_gpus=0)  # no GPU visible here -> one CPU device
    assert isinstance(default, tf.distribute.OneDeviceStrategy) and default.num_replicas_in_sync == 1
    forced = make_strategy(strategy='mirrored', devices=['/cpu:0'])
    assert isinstance(forced, tf.distribute.MirroredStrategy)


def test_bad_flags_are_named():
    with pytest.raises(ValueError, match='--strategy'):
        make_strategy(strategy='horovod')
    with pytest.raises(ValueError, match='--num-gpu'):
        make_strategy(num_gpus=len(tf.config.list_logical_devices('GPU')) + 1)
    with pytest.raises(ValueError, match='one_device'):
        make_strategy(strategy='one_device', devices=['/cpu:0', '/cpu:1'])


def test_same_devices_reuse_one_strategy():
    assert make_strategy(devices=['/cpu:0', '/cpu:1']) is make_strategy(devices=['/cpu:0', '/cpu:1'])
    assert make_strategy(devices=['/cpu:0', '/cpu:1'], reuse=False) is not make_strategy(devices=['/cpu:0', '/cpu:1'])


def test_equivalent_device_names_share_one_strategy():
    # Two MirroredStrategy objects over the same devices break each other's collectives.
    import tensorflow as tf
    full = [d.name for d in tf.config.list_logical_devices('CPU')][:2]
    assert make_strategy(devices=['/cpu:0', '/cpu:1']) is make_strategy(devices=full)
