"""PyTorch/MXNet weight converters: layout mapping round trips, hand-built torch zip/legacy files, MXNet files."""
import collections
import io
import pickle
import struct
import sys
import types
import zipfile

import numpy as np
import pytest

import keras

from common.models import resnet38, torch_layers
from common.models.naming import original_name
from common.weights import mxnet_convert, torch_convert

WIDTH = 1 / 16


# ---------------------------------------------------------------------------------------------------------------
# Layout mapping and loading

def _random_like(shapes, rng):
    return collections.OrderedDict((k, rng.standard_normal(s).astype(np.float32)) for k, s in shapes.items())


@pytest.fixture(scope='module')
def small_resnet():
    return resnet38.build_resnet38(width_multiplier=WIDTH, return_endpoints=('conv6',))


def test_round_trip_every_variable_gets_the_transposed_array(small_resnet):
    rng = np.random.default_rng(0)
    sd = _random_like(resnet38.resnet38_weight_shapes(WIDTH), rng)
    sd['b2.bn_branch2a.num_batches_tracked'] = np.array(7, np.int64)  # newer PyTorch buffers are ignored
    sd['fc8.weight'] = rng.standard_normal((20, 256, 1, 1)).astype(np.float32)
    restored, missing, unexpected = torch_convert.load_torch_state_dict(small_resnet, sd)
    assert missing == [] and unexpected == ['fc8.weight']
    assert len(restored) == len(sd) - 2
    for v in small_resnet.weights:
        want = sd[original_name(v)]
        want = want.transpose(2, 3, 1, 0) if want.ndim == 4 else want
        np.testing.assert_array_equal(np.asarray(v), want)
    back = torch_convert.export_torch_state_dict(small_resnet)
    assert list(back) == [original_name(v) for v in small_resnet.weights]
    for k, v in back.items():
        np.testing.assert_array_equal(v, sd[k])
    with pytest.raises(ValueError, match='fc8.weight'):
        torch_convert.load_torch_state_dict(small_resnet, sd, strict=True)


def test_missing_and_shape_mismatch_errors(small_resnet):
    shapes = resnet38.resnet38_weight_shapes(WIDTH)
    sd = _random_like(shapes, np.random.default_rng(1))
    del sd['bn7.running_var']
    _, missing, unexpected = torch_convert.load_torch_state_dict(small_resnet, sd)
    assert missing == ['bn7.running_var'] and unexpected == []
    sd['bn7.running_var'] = np.ones(shapes['bn7.running_var'], np.float32)
    sd['b3.conv_branch2a.weight'] = np.zeros((16, 8, 1, 3), np.float32)
    with pytest.raises(ValueError, match=r"b3\.conv_branch2a\.weight.*\(16, 8, 1, 3\).*\(3, 3, 8, 16\)"):
        torch_convert.load_torch_state_dict(small_resnet, sd)


def test_data_parallel_prefix_is_stripped(small_resnet):
    sd = _random_like(resnet38.resnet38_weight_shapes(WIDTH), np.random.default_rng(2))
    restored, missing, _ = torch_convert.load_torch_state_dict(
        small_resnet, {'module.' + k: v for k, v in sd.items()}, strict=True)
    assert not missing and len(restored) == len(sd)


def test_linear_and_1x1_conv_layouts():
    rng = np.random.default_rng(3)
    linear = rng.standard_normal((5, 7))
    np.testing.assert_array_equal(torch_convert.torch_to_keras_array('fc.weight', linear, (7, 5)), linear.T)
    np.testing.assert_array_equal(torch_convert.torch_to_keras_array('fc.weight', linear, (1, 1, 7, 5))[0, 0],
                                  linear.T)
    conv1x1 = rng.standard_normal((5, 7, 1, 1))
    np.testing.assert_array_equal(torch_convert.torch_to_keras_array('f9.weight', conv1x1, (7, 5)),
                                  conv1x1[:, :, 0, 0].T)
    np.testing.assert_array_equal(torch_convert.keras_to_torch_array(linear.T[None, None], torch_ndim=2), linear)
    conv = rng.standard_normal((4, 3, 3, 2))
    hwio = torch_convert.torch_to_keras_array('c.weight', conv, (3, 2, 3, 4))
    assert hwio[1, 0, 2, 3] == conv[3, 2, 1, 0]
    with pytest.raises(ValueError, match='fc.weight'):
        torch_convert.torch_to_keras_array('fc.weight', linear, (5, 7, 1))


def test_head_layers_with_bias_and_gn_style_vectors_load():
    inp = keras.Input((None, None, 6))
    y = torch_layers.TorchConv2D(4, 1, use_bias=True, original_name='f8_3', name='f8_3')(inp)
    model = keras.Model(inp, y)
    w = np.random.default_rng(4).standard_normal((4, 6, 1, 1)).astype(np.float32)
    restored, _, _ = torch_convert.load_torch_state_dict(model, {'f8_3.weight': w, 'f8_3.bias': np.arange(4.)})
    assert restored == ['f8_3.weight', 'f8_3.bias']
    np.testing.assert_array_equal(np.asarray(model.weights[0])[0, 0], w[:, :, 0, 0].T)


def test_expected_shapes_of_original_networks():
    full = torch_convert.expected_torch_shapes('resnet38_aff')
    conv = sum(int(np.prod(s)) for k, s in full.items() if len(s) == 4 and not k.startswith(('f8', 'f9')))
    assert conv == 105_023_168
    assert full['f8_3.weight'] == (64, 512, 1, 1) and full['f8_4.weight'] == (128, 1024, 1, 1)
    assert full['f8_5.weight'] == (256, 4096, 1, 1) and full['f9.weight'] == (448, 448, 1, 1)
    assert torch_convert.expected_torch_shapes('resnet38_seam')['f9.weight'] == (192, 195, 1, 1)
    assert torch_convert.expected_torch_shapes('resnet38_seam')['fc8.weight'] == (21, 4096, 1, 1)
    assert torch_convert.expected_torch_shapes('resnet38_cls')['fc8.weight'] == (20, 4096, 1, 1)
    vgg_aff = torch_convert.expected_torch_shapes('vgg16_aff')
    assert vgg_aff['f8_4.weight'] == (128, 512, 1, 1) and vgg_aff['gn8_5.bias'] == (256,)
    assert torch_convert.expected_torch_shapes('vgg16_cls')['fc8.weight'] == (20, 1024, 1, 1)
    sd = {k: np.zeros(s) for k, s in vgg_aff.items()}
    sd['fc7.bias'] = np.zeros(3)
    sd['extra'] = np.zeros(1)
    del sd['conv1_1.bias']
    missing, unexpected, mismatched = torch_convert.check_state_dict_shapes(sd, 'vgg16_aff')
    assert missing == ['conv1_1.bias'] and unexpected == ['extra'] and mismatched == [('fc7.bias', (3,), (1024,))]
    with pytest.raises(ValueError, match='resnet50'):
        torch_convert.expected_torch_shapes('resnet50')


# ---------------------------------------------------------------------------------------------------------------
# Hand-built torch.save files. A fake `torch` package (only while pickling) makes pickle emit exactly the globals
# torch writes: torch._utils._rebuild_tensor_v2 and torch.FloatStorage-like classes.

class _FakeStorage:
    def __init__(self, type_name, key, data):
        self.type_name, self.key, self.data = type_name, key, np.ascontiguousarray(data).ravel()


class _FakeTensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self):
        rebuild = sys.modules['torch._utils']._rebuild_tensor_v2
        return rebuild, (self.storage, self.offset, tuple(self.size), tuple(self.stride), False,
                         collections.OrderedDict())


@pytest.fixture
def fake_torch(monkeypatch):
    torch_mod = types.ModuleType('torch')
    utils_mod = types.ModuleType('torch._utils')
    storage_classes = {}
    for name in ('FloatStorage', 'HalfStorage', 'LongStorage'):
        cls = type(name, (), {'__module__': 'torch'})
        setattr(torch_mod, name, cls)
        storage_classes[name] = cls

    def _rebuild_tensor_v2(*args):
        raise AssertionError('never called')

    _rebuild_tensor_v2.__module__ = 'torch._utils'
    _rebuild_tensor_v2.__qualname__ = '_rebuild_tensor_v2'
    utils_mod._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch_mod._utils = utils_mod
    monkeypatch.setitem(sys.modules, 'torch', torch_mod)
    monkeypatch.setitem(sys.modules, 'torch._utils', utils_mod)
    return storage_classes


def _sample_objects(rng):
    """A state dict with a transposed (non-contiguous) tensor, a storage offset, a shared storage, fp16, int64."""
    base = rng.standard_normal(40).astype(np.float32)
    shared = _FakeStorage('FloatStorage', '0', base)
    half = rng.standard_normal(6).astype(np.float16)
    tensors = collections.OrderedDict([
        ('conv.weight', (_FakeTensor(shared, 0, (2, 3, 2, 2), (12, 4, 2, 1)), base[:24].reshape(2, 3, 2, 2))),
        ('fc.weight', (_FakeTensor(shared, 24, (4, 3), (1, 4)), base[24:36].reshape(3, 4).T)),  # t() view
        ('gn.bias', (_FakeTensor(_FakeStorage('HalfStorage', '1', half), 1, (5,), (1,)), half[1:6])),
        ('bn.num_batches_tracked', (_FakeTensor(_FakeStorage('LongStorage', '2', np.array([9])), 0, (), ()),
                                    np.array(9))),
    ])
    state = collections.OrderedDict((k, t) for k, (t, _) in tensors.items())
    state._metadata = collections.OrderedDict([('', {'version': 1})])  # as nn.Module.state_dict() sets
    expected = {k: e for k, (_, e) in tensors.items()}
    return state, expected


class _Pickler(pickle.Pickler):
    def __init__(self, f, storage_classes, legacy):
        super().__init__(f, protocol=2)
        self.storage_classes, self.legacy, self.storages = storage_classes, legacy, collections.OrderedDict()

    def persistent_id(self, obj):
        if not isinstance(obj, _FakeStorage):
            return None
        self.storages[obj.key] = obj
        cls = self.storage_classes[obj.type_name]
        if self.legacy:
            return ('storage', cls, obj.key, 'cpu', obj.data.size, None)
        return ('storage', cls, obj.key, 'cpu', obj.data.size)


def test_reads_hand_built_zip_checkpoint(tmp_path, fake_torch):
    state, expected = _sample_objects(np.random.default_rng(5))
    buf = io.BytesIO()
    pickler = _Pickler(buf, fake_torch, legacy=False)
    pickler.dump({'state_dict': state, 'epoch': 3})
    path = tmp_path / 'model.pth'
    with zipfile.ZipFile(path, 'w') as z:
        z.writestr('model/data.pkl', buf.getvalue())
        z.writestr('model/byteorder', 'little')
        for key, storage in pickler.storages.items():
            z.writestr(f'model/data/{key}', storage.data.astype(storage.data.dtype.newbyteorder('<')).tobytes())
        z.writestr('model/version', '3\n')
    sys.modules.pop('torch')  # the reader must not need torch
    loaded = torch_convert.read_torch_state_dict(path)
    assert list(loaded) == list(expected)
    for k, v in expected.items():
        assert loaded[k].dtype == v.dtype and loaded[k].shape == v.shape, k
        np.testing.assert_array_equal(loaded[k], v)


def test_reads_hand_built_legacy_checkpoint(tmp_path, fake_torch):
    state, expected = _sample_objects(np.random.default_rng(6))
    path = tmp_path / 'legacy.pth'
    with open(path, 'wb') as f:
        pickle.dump(0x1950a86a20f9469cfc6c, f, protocol=2)
        pickle.dump(1001, f, protocol=2)
        pickle.dump({'protocol_version': 1001, 'little_endian': True}, f, protocol=2)
        pickler = _Pickler(f, fake_torch, legacy=True)
        pickler.dump(state)
        pickle.dump(list(pickler.storages), f, protocol=2)
        for storage in pickler.storages.values():
            f.write(struct.pack('<q', storage.data.size))
            f.write(storage.data.tobytes())
    sys.modules.pop('torch')
    loaded = torch_convert.read_torch_state_dict(path)
    assert list(loaded) == list(expected)
    for k, v in expected.items():
        np.testing.assert_array_equal(loaded[k], v)
        assert loaded[k].dtype == v.dtype


def test_refuses_whole_module_pickles_and_non_checkpoints(tmp_path):
    buf = io.BytesIO()
    pickle.Pickler(buf, protocol=2).dump(collections.Counter(a=1))  # stands in for a pickled nn.Module
    path = tmp_path / 'module.pth'
    with zipfile.ZipFile(path, 'w') as z:
        z.writestr('archive/data.pkl', buf.getvalue())
    with pytest.raises(Exception, match=r'module\.pth.*collections\.Counter'):
        torch_convert.read_torch_state_dict(path)
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match='bad.pth'):
        torch_convert.read_torch_state_dict(bad)
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        torch_convert.read_torch_state_dict(tmp_path / 'nope.pth')


# ---------------------------------------------------------------------------------------------------------------
# MXNet (ademxapp ResNet-38 A1) names and .params files

def _ademxapp_names():
    """MXNet names of the backbone, following ademxapp's scheme: res<stage><a|b1..>_branch..., bn<...>, bn7."""
    names = ['arg:conv1a_weight']
    for unit in resnet38.resnet38_units()[1]:
        stage = unit.name[1]
        suffix = 'a' if '_' not in unit.name else 'b' + unit.name.split('_')[1]
        convs = ['branch2a', 'branch2b1'] + (['branch2b2'] if unit.kind == 'bottleneck' else [])
        bns = list(convs)
        if unit.kind == 'bottleneck' or unit.in_channels != unit.out_channels or unit.stride != 1:
            convs.append('branch1')
        names += [f'arg:res{stage}{suffix}_{c}_weight' for c in convs]
        for b in bns:
            names += [f'arg:bn{stage}{suffix}_{b}_gamma', f'arg:bn{stage}{suffix}_{b}_beta',
                      f'aux:bn{stage}{suffix}_{b}_moving_mean', f'aux:bn{stage}{suffix}_{b}_moving_var']
    names += ['arg:bn7_gamma', 'arg:bn7_beta', 'aux:bn7_moving_mean', 'aux:bn7_moving_var',
              'arg:linear1000_weight', 'arg:linear1000_bias']
    return names


def test_mxnet_names_map_to_exactly_the_backbone_keys():
    assert mxnet_convert.mxnet_name_to_torch('res2b1_branch2a_weight') == 'b2_1.conv_branch2a.weight'
    assert mxnet_convert.mxnet_name_to_torch('aux:bn4b5_branch2b1_moving_var') == 'b4_5.bn_branch2b1.running_var'
    assert mxnet_convert.mxnet_name_to_torch('arg:res6a_branch1_weight') == 'b6.conv_branch1.weight'
    assert mxnet_convert.mxnet_name_to_torch('bn6a_branch2b2_beta') == 'b6.bn_branch2b2.bias'
    assert mxnet_convert.mxnet_name_to_torch('bn7_gamma') == 'bn7.weight'
    assert mxnet_convert.mxnet_name_to_torch('conv1a_weight') == 'conv1a.weight'
    assert mxnet_convert.mxnet_name_to_torch('linear1000_bias') is None
    with pytest.raises(ValueError, match='bn7_foo'):
        mxnet_convert.mxnet_name_to_torch('bn7_foo')
    mapped = [mxnet_convert.mxnet_name_to_torch(n) for n in _ademxapp_names()]
    mapped = [m for m in mapped if m is not None]
    assert len(mapped) == len(set(mapped))
    assert set(mapped) == set(resnet38.resnet38_weight_shapes())


def _write_ndarray_list(path, named_arrays, version):
    out = [struct.pack('<QQ', 0x112, 0), struct.pack('<Q', len(named_arrays))]
    for _, a in named_arrays:
        if version == 'v2':
            out.append(struct.pack('<Iii', 0xF993FAC9, 0, a.ndim) + struct.pack(f'<{a.ndim}q', *a.shape))
        else:  # the oldest layout: ndim then uint32 dims, no magic
            out.append(struct.pack('<I', a.ndim) + struct.pack(f'<{a.ndim}I', *a.shape))
        flag = {np.dtype(np.float32): 0, np.dtype(np.float64): 1, np.dtype(np.int64): 6}[a.dtype]
        out.append(struct.pack('<iii', 1, 0, flag) + a.astype(a.dtype.newbyteorder('<')).tobytes())
    out.append(struct.pack('<Q', len(named_arrays)))
    for name, _ in named_arrays:
        out.append(struct.pack('<Q', len(name)) + name.encode())
    path.write_bytes(b''.join(out))


@pytest.mark.parametrize('version', ['v2', 'legacy'])
def test_reads_mxnet_params_and_converts(tmp_path, version):
    rng = np.random.default_rng(7)
    arrays = [('arg:conv1a_weight', rng.standard_normal((4, 3, 3, 3)).astype(np.float32)),
              ('aux:bn2a_branch2a_moving_var', rng.uniform(size=4).astype(np.float64)),
              ('arg:linear1000_weight', rng.standard_normal((10, 8)).astype(np.float32)),
              ('arg:res3b2_branch2b1_weight', np.arange(6, dtype=np.int64).reshape(1, 2, 3, 1))]
    path = tmp_path / f'{version}.params'
    _write_ndarray_list(path, arrays, version)
    loaded = mxnet_convert.read_mxnet_params(path)
    assert list(loaded) == [n for n, _ in arrays]
    for name, a in arrays:
        assert loaded[name].dtype == a.dtype
        np.testing.assert_array_equal(loaded[name], a)
    converted = mxnet_convert.convert_mxnet_to_torch(str(path))
    assert list(converted) == ['conv1a.weight', 'b2.bn_branch2a.running_var', 'b3_2.conv_branch2b1.weight']
    np.testing.assert_array_equal(converted['conv1a.weight'], arrays[0][1])
    bad = tmp_path / 'bad.params'
    bad.write_bytes(struct.pack('<QQ', 0x113, 0))
    with pytest.raises(ValueError, match='bad.params'):
        mxnet_convert.read_mxnet_params(bad)


# ---------------------------------------------------------------------------------------------------------------
# Caffe (.caffemodel) blobs, hand-encoded in protobuf wire format

def _varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number, wire, payload):
    key = _varint(number << 3 | wire)
    if wire == 2:
        return key + _varint(len(payload)) + payload
    return key + payload


def _blob(array, legacy_dims=None):
    body = b''
    if legacy_dims is None:
        body += _field(7, 2, _field(1, 2, b''.join(_varint(d) for d in array.shape)))
    else:
        body += b''.join(_field(i, 0, _varint(d)) for i, d in zip((1, 2, 3, 4), legacy_dims))
    body += _field(5, 2, array.astype('<f4').tobytes())
    return body


def test_reads_caffemodel_blobs_into_torch_keys(tmp_path):
    rng = np.random.default_rng(8)
    w11, b11 = rng.standard_normal((64, 3, 3, 3)), rng.standard_normal(64)
    w7, b7 = rng.standard_normal((1024, 1024)), rng.standard_normal(1024)
    layer = _field(1, 2, b'conv1_1') + _field(2, 2, b'Convolution') + _field(7, 2, _blob(w11)) + \
        _field(7, 2, _blob(b11))
    v1_layer = _field(4, 2, b'fc7') + _field(5, 0, _varint(4)) + \
        _field(6, 2, _blob(w7, legacy_dims=(1, 1, 1024, 1024))) + _field(6, 2, _blob(b7, legacy_dims=(1, 1, 1, 1024)))
    relu = _field(1, 2, b'relu1_1') + _field(2, 2, b'ReLU')
    net = _field(1, 2, b'VGG_ILSVRC_16') + _field(100, 2, layer) + _field(100, 2, relu) + _field(2, 2, v1_layer)
    path = tmp_path / 'vgg16_20M.caffemodel'
    path.write_bytes(net)
    blobs = torch_convert.read_caffemodel(path)
    assert list(blobs) == ['conv1_1', 'fc7']
    sd = torch_convert.convert_caffe_to_torch(str(path))
    assert list(sd) == ['conv1_1.weight', 'conv1_1.bias', 'fc7.weight', 'fc7.bias']
    np.testing.assert_allclose(sd['conv1_1.weight'], w11.astype(np.float32))
    assert sd['fc7.weight'].shape == (1024, 1024, 1, 1) and sd['fc7.bias'].shape == (1024,)
    np.testing.assert_allclose(sd['fc7.weight'][:, :, 0, 0], w7.astype(np.float32))
    np.testing.assert_allclose(sd['fc7.bias'], b7.astype(np.float32))
    bad = tmp_path / 'bad.caffemodel'
    bad.write_bytes(b'\x0a\xff')
    with pytest.raises(ValueError, match='bad.caffemodel'):
        torch_convert.read_caffemodel(bad)
