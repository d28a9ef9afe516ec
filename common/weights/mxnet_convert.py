"""MXNet ImageNet ResNet-38 (ademxapp model A1) weights -> PSA PyTorch state-dict names, without mxnet.

* `read_mxnet_params(path)`: NumPy reader of MXNet's NDArray list files (`mx.nd.save`, `.params`): uint64 magic
  0x112, uint64 reserved, uint64 count, the arrays, uint64 name count, names (uint64 length + bytes). Each dense
  array: [uint32 magic V1/V2/V3 (+ int32 storage type for V2/V3)] shape (uint32 ndim + int64 dims; the oldest,
  magic-less layout stores ndim then uint32 dims), context (int32 device type, int32 device id), int32 type
  flag, raw little-endian data. Sparse arrays are refused.
* `mxnet_name_to_torch(name)` / `convert_mxnet_to_torch(filename)`: the renaming of psa network/resnet38d.py
  `convert_mxnet_to_torch` (psa_a2gnn.md 5.1); the result loads with
  `common.weights.torch_convert.load_torch_state_dict` (OIHW -> HWIO there).
"""

import collections
import os
import struct

import numpy as np

_LIST_MAGIC = 0x112
_NDARRAY_V1_MAGIC = 0xF993FAC8
_NDARRAY_V2_MAGIC = 0xF993FAC9
_NDARRAY_V3_MAGIC = 0xF993FACA
_TYPE_FLAGS = {0: np.float32, 1: np.float64, 2: np.float16, 3: np.uint8, 4: np.int32, 5: np.int8, 6: np.int64,
               7: np.bool_, 8: np.int16, 9: np.uint16, 10: np.uint32, 11: np.uint64}
_BN_PARAM_MX_TO_TORCH = {'beta': 'bias', 'gamma': 'weight', 'mean': 'running_mean', 'var': 'running_var'}


class _Reader:
    def __init__(self, data, path):
        self.data, self.pos, self.path = data, 0, path

    def read(self, fmt):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ValueError(f'{self.path}: truncated MXNet params file at byte {self.pos}')
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values if len(values) > 1 else values[0]

    def read_bytes(self, size):
        if self.pos + size > len(self.data):
            raise ValueError(f'{self.path}: truncated MXNet params file at byte {self.pos}')
        out = self.data[self.pos:self.pos + size]
        self.pos += size
        return out


def _read_ndarray(reader, index):
    magic = reader.read('<I')
    if magic in (_NDARRAY_V2_MAGIC, _NDARRAY_V3_MAGIC):
        storage_type = reader.read('<i')
        if storage_type not in (0, -1):
            raise ValueError(f'{reader.path}: array {index} is sparse (storage type {storage_type}); '
                             'only dense arrays are supported')
        ndim = reader.read('<i')
        shape = reader.read(f'<{ndim}q') if ndim > 0 else ()
    elif magic == _NDARRAY_V1_MAGIC:
        ndim = reader.read('<I')
        shape = reader.read(f'<{ndim}q') if ndim > 0 else ()
    else:  # legacy layout: the first word already is ndim
        ndim = magic
        if ndim > 32:
            raise ValueError(f'{reader.path}: array {index} has an unknown header (word {magic:#x})')
        shape = reader.read(f'<{ndim}I') if ndim > 0 else ()
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    # A "none" array stores nothing more; with V3 (NumPy semantics) ndim 0 is a scalar and -1 means none.
    if ndim < 0 or (ndim == 0 and magic != _NDARRAY_V3_MAGIC):
        return None
    reader.read('<ii')  # context: device type, device id
    type_flag = reader.read('<i')
    if type_flag not in _TYPE_FLAGS:
        raise ValueError(f'{reader.path}: array {index} has unknown MXNet type flag {type_flag}')
    dtype = np.dtype(_TYPE_FLAGS[type_flag]).newbyteorder('<')
    count = int(np.prod(shape))
    raw = reader.read_bytes(count * dtype.itemsize)
    return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder('='), copy=True).reshape(shape)


def read_mxnet_params(path):
    """Reads an MXNet `.params` / `mx.nd.save` file with NumPy.

    Args:
      path: the file.
    Returns:
      OrderedDict name -> np.ndarray (names keep MXNet's 'arg:'/'aux:' prefixes when the file has them; a file
      saved without names yields keys '0', '1', ...).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'MXNet params file not found: {path}')
    with open(path, 'rb') as f:
        reader = _Reader(f.read(), path)
    magic, _reserved = reader.read('<QQ')
    if magic != _LIST_MAGIC:
        raise ValueError(f'{path}: not an MXNet NDArray file (magic {magic:#x}, expected {_LIST_MAGIC:#x})')
    count = reader.read('<Q')
    arrays = [_read_ndarray(reader, i) for i in range(count)]
    num_names = reader.read('<Q')
    if num_names not in (0, count):
        raise ValueError(f'{path}: {count} arrays but {num_names} names')
    names = [reader.read_bytes(reader.read('<Q')).decode('utf-8') for _ in range(num_names)]
    if not names:
        names = [str(i) for i in range(count)]
    return collections.OrderedDict((n, a) for n, a in zip(names, arrays) if a is not None)


def mxnet_name_to_torch(name):
    """Maps an ademxapp ResNet-38 parameter name to the PSA PyTorch key (psa resnet38d.convert_mxnet_to_torch).

    'conv1a_weight' -> 'conv1a.weight'; 'res2a_branch2a_weight' -> 'b2.conv_branch2a.weight';
    'bn4b3_branch2b1_moving_var' -> 'b4_3.bn_branch2b1.running_var'; 'bn7_gamma' -> 'bn7.weight';
    'linear1000_*' -> None (the ImageNet classifier is dropped). An 'arg:'/'aux:' prefix is ignored.
    Units ending in 'a' are the first of a stage ('res5a' -> 'b5'); others take the stage digit third from the end
    and the last character as index ('res2b1' -> 'b2_1'), exactly as the original.
    """
    if name.startswith(('arg:', 'aux:')):
        name = name[4:]
    toks = name.split('_')
    if 'conv1a' in toks[0]:
        return 'conv1a.weight'
    if 'linear1000' in toks[0]:
        return None
    if len(toks) > 1 and 'branch' in toks[1]:
        head = toks[0]
        unit = f'b{head[-2]}' if head[-1] == 'a' else f'b{head[-3]}_{head[-1]}'
        if 'res' in head:
            layer, param = 'conv', 'weight'
        else:
            layer, param = 'bn', _bn_param(toks[-1], name)
        return f'{unit}.{layer}_{toks[1]}.{param}'
    return f'bn7.{_bn_param(toks[-1], name)}'


def _bn_param(token, name):
    if token not in _BN_PARAM_MX_TO_TORCH:
        raise ValueError(f'MXNet parameter {name!r}: unknown batch-norm field {token!r} '
                         f'(expected one of {sorted(_BN_PARAM_MX_TO_TORCH)})')
    return _BN_PARAM_MX_TO_TORCH[token]


def convert_mxnet_to_torch(filename):
    """psa resnet38d.convert_mxnet_to_torch without mxnet/torch.

    Args:
      filename: MXNet .params file path, or an already loaded {mxnet name: array} mapping.
    Returns:
      OrderedDict PSA PyTorch key -> np.ndarray (OIHW convs, [C] BN tensors).
    """
    params = filename if isinstance(filename, dict) else read_mxnet_params(filename)
    out = collections.OrderedDict()
    for mx_name, value in params.items():
        torch_name = mxnet_name_to_torch(mx_name)
        if torch_name is None:
            continue
        if torch_name in out:
            raise ValueError(f'MXNet parameters map twice to {torch_name!r} (second: {mx_name!r})')
        out[torch_name] = np.asarray(value)
    return out
