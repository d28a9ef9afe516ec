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


@pytest.mark.parametrize('tf_config, match', [
    ('{not json', 'not a valid cluster description'),
    ('{"task": {"type": "worker", "index": 0}}', 'not a valid cluster description'),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 3}}', 'index 3 is outside'),
])
def test_malformed_tf_config_is_named(monkeypatch, tf_config, match):
    monkeypatch.setenv('TF_CONFIG', tf_config)
    with pytest.raises(ValueError, match=rf'--strategy multi_worker: TF_CONFIG .*{match}|{match}'):
        make_strategy(strategy='multi_worker', reuse=False)


def test_strategy_from_flags_and_single_process_roles(tmp_path):
    from common.train.strategy import is_chief, strategy_from_flags, worker_write_dir
    strategy = strategy_from_flags(num_gpu=4, strategy='auto')  # no GPU here: the CPU, whatever --num-gpu says
    assert isinstance(strategy, tf.distribute.OneDeviceStrategy)
    with pytest.raises(ValueError, match='--strategy'):
        strategy_from_flags(strategy='horovod')
    # Outside a multi-worker cluster every process is the chief and writes where it is told.
    assert is_chief(strategy) and worker_write_dir(str(tmp_path), strategy) == str(tmp_path)
