"""PyTorch state dicts (PSA / SEAM / A2GNN ResNet-38 and VGG-16 nets) -> Keras variables, without torch.

* `read_torch_state_dict(path)`: reads a `.pth` written by `torch.save` into {key: np.ndarray}. Both formats are
  read in pure Python/NumPy: the zip format (torch >= 1.6: `<archive>/data.pkl` + raw storages `data/<key>`)
  and the legacy format (torch 0.4-1.5, used by the released PSA weights: pickled magic number, protocol, sys
  info, the object, the storage keys, then each storage as int64 element count + raw bytes). A restricted
  unpickler maps `torch._utils._rebuild_tensor_v2` / `_rebuild_parameter` and the `torch.*Storage` classes to
  NumPy and refuses anything else. When the file holds something it cannot read and torch is installed,
  `torch.load` is used instead.
* `load_torch_state_dict(model, state_dict, strict=False)`: assigns arrays to the Keras variables whose
  `common.models.naming.original_name` equals the state-dict key. Layouts: conv OIHW -> HWIO, linear [out,in] ->
  [in,out] (or a [1,1,in,out] 1x1-conv kernel), 1-D tensors (bias, BN weight/bias/running_mean/running_var,
  GroupNorm) as they are. BN `num_batches_tracked` buffers are ignored.
* `expected_torch_shapes(network, ...)`: the state-dict keys and shapes of each original network, so a model or
  a file can be checked against them.
* `convert_caffe_to_torch(caffemodel_path)`: the VGG-16 ImageNet init of PSA (DeepLab's caffemodel) read with a
  small protobuf decoder (`read_caffemodel`), giving the same PyTorch keys as the original converter.
"""

import collections
import io
import os
import pickle
import zipfile

import numpy as np

from common.models.naming import original_names

_LEGACY_MAGIC_NUMBER = 0x1950a86a20f9469cfc6c
_IGNORED_SUFFIXES = ('num_batches_tracked',)

_STORAGE_DTYPES = {
    'FloatStorage': np.float32, 'DoubleStorage': np.float64, 'HalfStorage': np.float16,
    'BFloat16Storage': 'bfloat16', 'LongStorage': np.int64, 'IntStorage': np.int32,
    'ShortStorage': np.int16, 'CharStorage': np.int8, 'ByteStorage': np.uint8, 'BoolStorage': np.bool_,
    'UntypedStorage': np.uint8,
}


class _StorageType:
    """Stands in for a torch.*Storage class inside the unpickler."""

    def __init__(self, name):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]

    @property
    def itemsize(self):
        return 2 if self.dtype == 'bfloat16' else np.dtype(self.dtype).itemsize

    def decode(self, raw, big_endian=False):
        """Raw bytes -> flat array (bfloat16 widened to float32, which holds it exactly)."""
        if self.dtype == 'bfloat16':
            bits = np.frombuffer(raw, dtype='>u2' if big_endian else '<u2').astype(np.uint32)
            return (bits << 16).view(np.float32)
        dtype = np.dtype(self.dtype)
        if dtype.itemsize > 1:
            dtype = dtype.newbyteorder('>' if big_endian else '<')
        return np.frombuffer(raw, dtype=dtype).astype(np.dtype(self.dtype).newbyteorder('='), copy=False)


class _Storage:
    """A storage whose data may arrive after unpickling (legacy format); `base`/`offset` describe views."""

    def __init__(self, storage_type, data=None, base=None, offset=0):
        self.storage_type = storage_type
        self.data = data
        self.base = base
        self.offset = offset

    def flat(self):
        if self.base is not None:
            return self.base.flat()[self.offset:]
        if self.data is None:
            raise pickle.UnpicklingError('a tensor refers to a storage whose data is missing from the file')
        return self.data


class _LazyTensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)

    def to_numpy(self):
        flat = self.storage.flat()
        numel = int(np.prod(self.size)) if self.size else 1
        if numel == 0:
            return np.zeros(self.size, dtype=flat.dtype)
        span = 1 + sum((s - 1) * st for s, st in zip(self.size, self.stride))
        if self.offset + span > flat.size:
            raise pickle.UnpicklingError(f'tensor of size {self.size} exceeds its storage ({flat.size} elements)')
        base = flat[self.offset:self.offset + span]
        return np.lib.stride_tricks.as_strided(
            base, shape=self.size, strides=[st * base.itemsize for st in self.stride]).copy()


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *unused):
    return data


class _UnsupportedContent(pickle.UnpicklingError):
    """The pickle holds objects the NumPy reader does not know (whole modules, custom classes, ...)."""


class _TorchUnpickler(pickle.Unpickler):
    """Unpickler that knows only what state dicts contain; `storage_loader(storage_type, key, numel)`."""

    _ALLOWED = {
        ('collections', 'OrderedDict'): collections.OrderedDict,
        ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
        ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
        ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
        ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
    }

    def __init__(self, file, persistent_loader, source):
        super().__init__(file, encoding='latin1')
        self._persistent_loader = persistent_loader
        self._source = source

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module in ('torch', 'torch.storage') and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise _UnsupportedContent(
            f'{self._source}: cannot read {module}.{name} without torch (only state dicts of tensors are '
            f'supported; save `model.state_dict()`, not the module)')

    def persistent_load(self, pid):
        return self._persistent_loader(pid)


def _resolve(obj):
    if isinstance(obj, _LazyTensor):
        return obj.to_numpy()
    if isinstance(obj, dict):
        out = collections.OrderedDict() if isinstance(obj, collections.OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _resolve(v)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v) for v in obj)
    return obj


def _as_str(value):
    return value.decode('ascii') if isinstance(value, bytes) else value


def _load_zip(path):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = [n for n in names if n == 'data.pkl' or n.endswith('/data.pkl')]
        if len(pkl) != 1:
            raise ValueError(f'{path}: a torch zip checkpoint must hold exactly one data.pkl, found {pkl}')
        prefix = pkl[0][:-len('data.pkl')]
        big_endian = False
        if prefix + 'byteorder' in names:
            big_endian = archive.read(prefix + 'byteorder').decode().strip() == 'big'
        storages = {}

        def load_storage(pid):
            if _as_str(pid[0]) != 'storage':
                raise _UnsupportedContent(f'{path}: unknown persistent id type {pid[0]!r}')
            storage_type, key, _location, numel = pid[1:5]
            key = _as_str(key)
            if key not in storages:
                entry = f'{prefix}data/{key}'
                if entry not in names:
                    raise ValueError(f'{path}: storage {entry} is missing from the archive')
                raw = archive.read(entry)
                if storage_type.name == 'UntypedStorage':
                    numel = len(raw)
                expected = int(numel) * storage_type.itemsize
                if len(raw) < expected:
                    raise ValueError(f'{path}: storage {entry} has {len(raw)} bytes, expected {expected}')
                storages[key] = _Storage(storage_type, storage_type.decode(raw[:expected], big_endian))
            return storages[key]

        with archive.open(pkl[0]) as f:
            obj = _TorchUnpickler(io.BytesIO(f.read()), load_storage, path).load()
    return _resolve(obj)


def _load_legacy(path):
    with open(path, 'rb') as f:
        try:
            magic = pickle.load(f)
        except Exception as exc:  # not a pickle at all
            raise ValueError(f'{path}: not a PyTorch checkpoint (neither a zip archive nor a legacy pickle)') \
                from exc
        if magic != _LEGACY_MAGIC_NUMBER:
            raise ValueError(f'{path}: not a PyTorch checkpoint (bad magic number {magic!r})')
        pickle.load(f)  # protocol version
        pickle.load(f)  # sys info (endianness, type sizes)
        storages = {}

        def load_storage(pid):
            if _as_str(pid[0]) != 'storage':
                raise _UnsupportedContent(f'{path}: cannot read a pickled {pid[0]!r} without torch')
            storage_type, root_key, _location, _numel, view_metadata = pid[1:6]
            root_key = _as_str(root_key)
            if root_key not in storages:
                storages[root_key] = _Storage(storage_type)
            if view_metadata is not None:
                view_key, offset, _view_size = view_metadata
                storages[_as_str(view_key)] = _Storage(storage_type, base=storages[root_key], offset=int(offset))
                return storages[_as_str(view_key)]
            return storages[root_key]

        obj = _TorchUnpickler(f, load_storage, path).load()
        keys = pickle.load(f)
        for key in keys:
            storage = storages[_as_str(key)]
            header = f.read(8)
            if len(header) != 8:
                raise ValueError(f'{path}: truncated file while reading storage {key}')
            numel = int(np.frombuffer(header, '<i8')[0])
            nbytes = numel * storage.storage_type.itemsize
            raw = f.read(nbytes)
            if len(raw) != nbytes:
                raise ValueError(f'{path}: truncated file: storage {key} needs {nbytes} bytes, got {len(raw)}')
            storage.data = storage.storage_type.decode(raw)
    return _resolve(obj)


def _load_with_torch(path):
    import torch  # optional dependency

    obj = torch.load(path, map_location='cpu')

    def to_numpy(value):
        if isinstance(value, torch.Tensor):
            return value.detach().float().numpy() if value.dtype == torch.bfloat16 else value.detach().numpy()
        if isinstance(value, dict):
            return collections.OrderedDict((k, to_numpy(v)) for k, v in value.items())
        return value

    return to_numpy(obj)


def _extract_state_dict(obj, path):
    if isinstance(obj, dict) and not any(isinstance(v, np.ndarray) for v in obj.values()):
        for wrapper_key in ('state_dict', 'model', 'model_state_dict', 'net'):
            if isinstance(obj.get(wrapper_key), dict):
                return _extract_state_dict(obj[wrapper_key], path)
    if not isinstance(obj, dict):
        raise ValueError(f'{path}: expected a state dict (a dict of tensors), got {type(obj).__name__}')
    arrays = collections.OrderedDict((k, v) for k, v in obj.items() if isinstance(v, np.ndarray))
    if not arrays:
        raise ValueError(f'{path}: the file holds no tensors')
    return strip_data_parallel_prefix(arrays)


def strip_data_parallel_prefix(state_dict):
    """Removes the 'module.' prefix nn.DataParallel adds, when every key has it."""
    if state_dict and all(k.startswith('module.') for k in state_dict):
        return collections.OrderedDict((k[len('module.'):], v) for k, v in state_dict.items())
    return state_dict


def read_torch_state_dict(path):
    """Reads a PyTorch checkpoint file into an OrderedDict {key: np.ndarray} without needing torch.

    Args:
      path: a file written by torch.save (zip or legacy format) holding a state dict, or a dict wrapping one
        under 'state_dict' / 'model'. A 'module.' (DataParallel) prefix on every key is removed.
    Returns:
      OrderedDict key -> array in PyTorch layout (OIHW convs). bfloat16 tensors come back as float32.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'PyTorch checkpoint not found: {path}')
    try:
        obj = _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)
    except _UnsupportedContent as unsupported:
        try:
            obj = _load_with_torch(path)
        except ImportError:
            raise unsupported from None
    return _extract_state_dict(obj, path)


def torch_to_keras_array(key, array, keras_shape):
    """Converts one PyTorch tensor to the layout of a Keras variable of shape `keras_shape`.

    Conv OIHW -> HWIO; linear [out,in] -> [in,out] or -> [1,1,in,out]; a [out,in,1,1] conv -> [in,out] dense;
    everything else unchanged. Raises ValueError naming the key and both shapes when they cannot match.
    """
    array = np.asarray(array)
    keras_shape = tuple(int(d) for d in keras_shape)
    if array.ndim == 4 and len(keras_shape) == 4:
        converted = array.transpose(2, 3, 1, 0)
    elif array.ndim == 2 and len(keras_shape) == 2:
        converted = array.T
    elif array.ndim == 2 and len(keras_shape) == 4 and keras_shape[:2] == (1, 1):
        converted = array.T.reshape(keras_shape)
    elif array.ndim == 4 and len(keras_shape) == 2 and array.shape[2:] == (1, 1):
        converted = array[:, :, 0, 0].T
    else:
        converted = array
    if tuple(converted.shape) != keras_shape:
        raise ValueError(f'shape mismatch for {key!r}: PyTorch tensor {tuple(array.shape)} cannot be loaded into '
                         f'the Keras variable of shape {keras_shape}')
    return converted


def keras_to_torch_array(array, torch_ndim=None):
    """Inverse of `torch_to_keras_array`: HWIO -> OIHW, [in,out] -> [out,in]; torch_ndim=2 turns a 1x1-conv
    kernel [1,1,in,out] into a linear [out,in], torch_ndim=4 a dense [in,out] into [out,in,1,1]."""
    array = np.asarray(array)
    if array.ndim == 4 and torch_ndim == 2:
        return array[0, 0].T
    if array.ndim == 2 and torch_ndim == 4:
        return array.T[:, :, None, None]
    if array.ndim == 4:
        return array.transpose(3, 2, 0, 1)
    if array.ndim == 2:
        return array.T
    return array


def _model_variables(model):
    # Dropout seed-generator states are not weights of the original networks.
    return [v for v in model.weights if 'seed_generator' not in (getattr(v, 'path', None) or v.name)]


def export_torch_state_dict(model):
    """The model's variables as an OrderedDict {original (PyTorch) name: array in PyTorch layout}."""
    return collections.OrderedDict(
        (name, keras_to_torch_array(np.asarray(v))) for name, v in original_names(_model_variables(model)).items())


def load_torch_state_dict(model, state_dict, strict=False):
    """Loads a PyTorch state dict into a Keras model built with original (PyTorch) variable names.

    Args:
      model: keras.Model whose variables carry `original_name`s such as 'b2.conv_branch2a.weight'.
      state_dict: mapping key -> array (np.ndarray or anything np.asarray accepts, e.g. torch tensors on CPU),
        or the path of a .pth file (read with `read_torch_state_dict`).
      strict: raise ValueError when a model variable has no key or a key matches no variable.
    Returns:
      (restored, missing, unexpected): names of assigned variables, of model variables absent from the state dict,
      and state-dict keys with no variable (BN 'num_batches_tracked' buffers are never reported).
    Raises:
      ValueError on a shape mismatch, naming the key and both shapes.
    """
    if isinstance(state_dict, (str, os.PathLike)):
        state_dict = read_torch_state_dict(state_dict)
    state_dict = strip_data_parallel_prefix(collections.OrderedDict(state_dict))
    variables = original_names(_model_variables(model))
    restored, missing = [], []
    for name, variable in variables.items():
        if name not in state_dict:
            missing.append(name)
            continue
        value = state_dict[name]
        if hasattr(value, 'detach'):  # a torch tensor, when torch happens to be available
            value = value.detach().cpu().numpy()
        converted = torch_to_keras_array(name, value, variable.shape)
        variable.assign(converted.astype(variable.dtype))
        restored.append(name)
    unexpected = [k for k in state_dict if k not in variables and not k.endswith(_IGNORED_SUFFIXES)]
    if strict and (missing or unexpected):
        raise ValueError(f'state dict does not match model {model.name!r}: missing keys {missing}, '
                         f'unexpected keys {unexpected}')
    return restored, missing, unexpected


# Heads of the original networks: key -> PyTorch shape as a function of the backbone widths.
def _resnet38_heads(network, w):
    conv4, conv5, conv6 = w[3], w[4], w[6]  # b5 input (stage-4 width), b6 input (b5 width), b7 output
    aff = collections.OrderedDict([
        ('f8_3.weight', (64, conv4, 1, 1)), ('f8_4.weight', (128, conv5, 1, 1)),
        ('f8_5.weight', (256, conv6, 1, 1)), ('f9.weight', (448, 448, 1, 1))])
    return {
        'resnet38d': collections.OrderedDict(),
        'resnet38_cls': collections.OrderedDict([('fc8.weight', (20, conv6, 1, 1))]),
        'resnet38_aff': aff,
        'resnet38_aff_gated': aff,
        'resnet38_seam': collections.OrderedDict([
            ('fc8.weight', (21, conv6, 1, 1)), ('f8_3.weight', (64, conv4, 1, 1)),
            ('f8_4.weight', (128, conv5, 1, 1)), ('f9.weight', (192, 3 + 64 + 128, 1, 1))]),
    }[network]


def _vgg16_heads(network, w):
    conv4, conv5, fc7 = w[3], w[4], w[5]
    return {
        'vgg16d': collections.OrderedDict(),
        'vgg16_cls': collections.OrderedDict([('fc8.weight', (20, fc7, 1, 1))]),
        'vgg16_aff': collections.OrderedDict([
            ('f8_3.weight', (64, conv4, 1, 1)), ('f8_4.weight', (128, conv5, 1, 1)),
            ('f8_5.weight', (256, fc7, 1, 1)),
            ('gn8_3.weight', (64,)), ('gn8_3.bias', (64,)), ('gn8_4.weight', (128,)), ('gn8_4.bias', (128,)),
            ('gn8_5.weight', (256,)), ('gn8_5.bias', (256,)), ('f9.weight', (448, 448, 1, 1))]),
    }[network]


RESNET38_NETWORKS = ('resnet38d', 'resnet38_cls', 'resnet38_aff', 'resnet38_aff_gated', 'resnet38_seam')
VGG16_NETWORKS = ('vgg16d', 'vgg16_cls', 'vgg16_aff')


def expected_torch_shapes(network, width_multiplier=1.0, widths=None):
    """State-dict keys -> PyTorch shapes of an original network (backbone scaled by width_multiplier/widths;
    head widths such as 64/128/256/448 are the originals').

    Args:
      network: one of RESNET38_NETWORKS (psa resnet38d / resnet38_cls / resnet38_aff, a2g resnet38_aff_gated,
        SEAM resnet38_SEAM) or VGG16_NETWORKS (psa vgg16d / vgg16_cls / vgg16_aff).
    Returns:
      OrderedDict key -> shape tuple (without BN 'num_batches_tracked').
    """
    if network in RESNET38_NETWORKS:
        from common.models import resnet38
        shapes = resnet38.resnet38_weight_shapes(width_multiplier, widths)
        heads = _resnet38_heads(network, resnet38.resnet38_widths(width_multiplier, widths))
    elif network in VGG16_NETWORKS:
        from common.models import vgg16
        shapes = vgg16.vgg16_weight_shapes(1, width_multiplier, widths)
        heads = _vgg16_heads(network, vgg16.vgg16_widths(width_multiplier, widths))
    else:
        raise ValueError(f'unknown network {network!r}: use one of {RESNET38_NETWORKS + VGG16_NETWORKS}')
    shapes.update(heads)
    return shapes


def check_state_dict_shapes(state_dict, network, width_multiplier=1.0, widths=None):
    """Compares a state dict with `expected_torch_shapes(network)`.

    Returns:
      (missing keys, unexpected keys, [(key, actual shape, expected shape), ...] for shape mismatches).
    """
    expected = expected_torch_shapes(network, width_multiplier, widths)
    keys = [k for k in state_dict if not k.endswith(_IGNORED_SUFFIXES)]
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in keys if k not in expected]
    mismatched = [(k, tuple(np.shape(state_dict[k])), expected[k]) for k in keys
                  if k in expected and tuple(np.shape(state_dict[k])) != tuple(expected[k])]
    return missing, unexpected, mismatched


# ---------------------------------------------------------------------------------------------------------------
# Caffe (.caffemodel) -> PyTorch keys, for the VGG-16 ImageNet init (psa vgg16d.convert_caffe_to_torch).

def _read_varint(data, pos):
    result, shift = 0, 0
    while True:
        if pos >= len(data):
            raise ValueError('truncated protobuf varint')
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _protobuf_fields(data):
    """Yields (field number, wire type, value) of one protobuf message; value is bytes for length-delimited
    fields, an int for varints and raw bytes for fixed 32/64-bit fields."""
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(data, pos)
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ValueError(f'unsupported protobuf wire type {wire}')
        if pos > len(data):
            raise ValueError('truncated protobuf message')
        yield field, wire, value


def _packed_varints(value):
    out, pos = [], 0
    while pos < len(value):
        v, pos = _read_varint(value, pos)
        out.append(v)
    return out


def _caffe_blob(data):
    """BlobProto -> np.ndarray (float32, or float64 for double_data): shape from BlobShape (field 7) or the
    legacy num/channels/height/width (fields 1-4)."""
    legacy = {}
    shape, floats, doubles = None, [], []
    for field, wire, value in _protobuf_fields(data):
        if field in (1, 2, 3, 4) and wire == 0:
            legacy[field] = value
        elif field == 5:  # data (packed or not)
            floats.append(np.frombuffer(value, '<f4'))
        elif field == 8:  # double_data
            doubles.append(np.frombuffer(value, '<f8'))
        elif field == 7:
            dims = []
            for f, w, v in _protobuf_fields(value):
                if f == 1:
                    dims.extend(_packed_varints(v) if w == 2 else [v])
            shape = tuple(dims)
    values = np.concatenate(doubles) if doubles else (np.concatenate(floats) if floats else np.zeros(0, '<f4'))
    if shape is None:
        shape = tuple(legacy.get(i, 1) for i in (1, 2, 3, 4)) if legacy else (values.size,)
    if int(np.prod(shape)) != values.size:
        raise ValueError(f'caffe blob of shape {shape} holds {values.size} values')
    return values.astype(values.dtype.newbyteorder('='), copy=True).reshape(shape)


def read_caffemodel(caffemodel_path):
    """Reads the parameter blobs of a .caffemodel (NetParameter, binary protobuf) without caffe.

    Returns:
      OrderedDict layer name -> [blob arrays] for layers that have blobs (new `layer` and V1 `layers` fields).
    """
    path = os.fspath(caffemodel_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'caffemodel not found: {path}')
    with open(path, 'rb') as f:
        data = f.read()
    layers = collections.OrderedDict()
    try:
        for field, wire, value in _protobuf_fields(data):
            if wire != 2 or field not in (2, 100):  # 100: LayerParameter, 2: V1LayerParameter
                continue
            name_field, blob_field = (1, 7) if field == 100 else (4, 6)
            name, blobs = None, []
            for f, w, v in _protobuf_fields(value):
                if f == name_field and w == 2:
                    name = v.decode('utf-8')
                elif f == blob_field and w == 2:
                    blobs.append(_caffe_blob(v))
            if name is not None and blobs:
                layers[name] = blobs
    except ValueError as exc:
        raise ValueError(f'{path}: not a readable caffemodel ({exc})') from exc
    return layers


def convert_caffe_to_torch(caffemodel_path, prototxt_path=None):
    """psa vgg16d.convert_caffe_to_torch without caffe: '<layer>.weight' = blob 0, '<layer>.bias' = blob 1.

    Args:
      caffemodel_path: the .caffemodel file (e.g. DeepLab's VGG-16 20M init).
      prototxt_path: unused (the original needed it only to instantiate caffe.Net); blobs are taken from every
        layer of the caffemodel, and blobs of the VGG-16-D layers are reshaped to the PyTorch shapes of
        `vgg16_weight_shapes()` when the element counts agree (legacy InnerProduct blobs are [1,1,out,in]).
    Returns:
      OrderedDict PyTorch key -> np.ndarray.
    """
    del prototxt_path
    from common.models import vgg16
    expected = vgg16.vgg16_weight_shapes()
    out = collections.OrderedDict()
    for layer, blobs in read_caffemodel(caffemodel_path).items():
        for suffix, blob in zip(('weight', 'bias'), blobs[:2]):
            key = f'{layer}.{suffix}'
            want = expected.get(key)
            if want is not None and blob.shape != want and blob.size == int(np.prod(want)):
                blob = blob.reshape(want)
            out[key] = blob
    return out
