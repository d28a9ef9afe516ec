"""Keras layers with PyTorch semantics, for the PSA / SEAM / A2GNN networks (channels-last).

PyTorch pads convolutions and pools symmetrically by an explicit amount, while TF 'SAME' puts the extra pixel at
the bottom/right; these layers pad explicitly and then run a 'valid' op, so a 3x3/s2/p1 conv or pool sees exactly
the same windows as in PyTorch. Max-pools pad with -inf (PyTorch never lets padding win a max). Batch norm is the
PSA flavour: eps 1e-5, always in inference mode, all four tensors frozen (psa_a2gnn.md 8.3).

Every layer takes an optional `original_name` (e.g. 'b2.conv_branch2a'); the PyTorch state-dict key of each
variable ('b2.conv_branch2a.weight', 'b2.bn_branch2a.running_mean', ...) is recorded with
`common.models.naming.set_original_name` when the layer is built.
"""

import math

import keras
from keras import ops

from common.models.naming import set_original_name

BN_EPSILON = 1e-5


def torch_conv_kernel_initializer():
    """PyTorch's default Conv2d weight init, kaiming_uniform_(a=sqrt(5)) = U(+-1/sqrt(fan_in))."""
    return keras.initializers.VarianceScaling(1.0 / 3.0, 'fan_in', 'uniform')


def torch_kaiming_normal_initializer():
    """torch.nn.init.kaiming_normal_ (fan_in, gain sqrt(2)); NOT truncated, unlike keras HeNormal."""
    return keras.initializers.VarianceScaling(2.0, 'fan_in', 'untruncated_normal')


def torch_xavier_uniform_initializer(gain=1.0):
    """torch.nn.init.xavier_uniform_(gain): U(+-gain*sqrt(6/(fan_in+fan_out)))."""
    return keras.initializers.VarianceScaling(gain * gain, 'fan_avg', 'uniform')


@keras.saving.register_keras_serializable(package='affinity_seg')
class _TorchBiasInitializer(keras.initializers.Initializer):
    """PyTorch's default Conv2d bias init U(+-1/sqrt(fan_in)), fan_in = in_channels * kh * kw."""

    def __init__(self, fan_in):
        self.fan_in = int(fan_in)

    def __call__(self, shape, dtype=None):
        bound = 1.0 / math.sqrt(self.fan_in) if self.fan_in > 0 else 0.0
        return keras.random.uniform(shape, -bound, bound, dtype=dtype)

    def get_config(self):
        return {'fan_in': self.fan_in}


def _pair(value, what):
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f'{what} must be an int or a pair, got {value!r}')
    return value


@keras.saving.register_keras_serializable(package='affinity_seg')
class TorchConv2D(keras.layers.Layer):
    """nn.Conv2d: explicit symmetric zero padding, then a 'valid' (optionally dilated) convolution.

    Args:
      filters: output channels.
      kernel_size: int or (kh, kw).
      strides: int or pair.
      padding: int or (ph, pw) zeros added on BOTH sides (PyTorch `padding`).
      dilation_rate: int or pair (PyTorch `dilation`).
      use_bias: PyTorch `bias`.
      kernel_initializer / bias_initializer: default to PyTorch's defaults.
      original_name: PyTorch module path; variables get '<original_name>.weight' / '.bias'.
    Input [N,H,W,Cin] -> output [N, floor((H+2p-d(k-1)-1)/s)+1, ..., filters]. Kernel is HWIO.
    """

    def __init__(self, filters, kernel_size, strides=1, padding=0, dilation_rate=1, use_bias=True,
                 kernel_initializer=None, bias_initializer=None, original_name=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, 'kernel_size')
        self.strides = _pair(strides, 'strides')
        self.padding = _pair(padding, 'padding')
        self.dilation_rate = _pair(dilation_rate, 'dilation_rate')
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(f'{self.name}: strides > 1 together with dilation > 1 is not supported by TF')
        self.use_bias = bool(use_bias)
        self.kernel_initializer = (keras.initializers.get(kernel_initializer) if kernel_initializer is not None
                                   else torch_conv_kernel_initializer())
        self._bias_initializer_arg = bias_initializer
        self.original_name = original_name

    def build(self, input_shape):
        in_channels = int(input_shape[-1])
        kh, kw = self.kernel_size
        self.kernel = self.add_weight(name='kernel', shape=(kh, kw, in_channels, self.filters),
                                      initializer=self.kernel_initializer)
        if self.use_bias:
            bias_init = (keras.initializers.get(self._bias_initializer_arg) if self._bias_initializer_arg is not None
                         else _TorchBiasInitializer(in_channels * kh * kw))
            self.bias = self.add_weight(name='bias', shape=(self.filters,), initializer=bias_init)
        else:
            self.bias = None
        if self.original_name:
            set_original_name(self.kernel, self.original_name + '.weight')
            if self.bias is not None:
                set_original_name(self.bias, self.original_name + '.bias')

    def call(self, inputs):
        ph, pw = self.padding
        if ph or pw:
            inputs = ops.pad(inputs, [[0, 0], [ph, ph], [pw, pw], [0, 0]])
        outputs = ops.conv(inputs, self.kernel, strides=self.strides, padding='valid',
                           dilation_rate=self.dilation_rate)
        if self.bias is not None:
            outputs = outputs + self.bias
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, strides=self.strides,
                      padding=self.padding, dilation_rate=self.dilation_rate, use_bias=self.use_bias,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
                      bias_initializer=(None if self._bias_initializer_arg is None else
                                        keras.initializers.serialize(
                                            keras.initializers.get(self._bias_initializer_arg))),
                      original_name=self.original_name)
        return config


@keras.saving.register_keras_serializable(package='affinity_seg')
class FrozenBatchNorm(keras.layers.Layer):
    """PSA's BatchNorm2d: y = (x - running_mean) / sqrt(running_var + eps) * weight + bias, channels last.

    Always uses the running statistics (the `training` flag is ignored) and none of its variables is trainable,
    as the originals' overridden `train()` forces every BN to eval mode with frozen affine parameters.
    Variables: gamma (weight), beta (bias), moving_mean (running_mean), moving_variance (running_var).
    """

    def __init__(self, epsilon=BN_EPSILON, original_name=None, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        self.original_name = original_name

    def build(self, input_shape):
        channels = (int(input_shape[-1]),)
        self.gamma = self.add_weight(name='gamma', shape=channels, initializer='ones', trainable=False)
        self.beta = self.add_weight(name='beta', shape=channels, initializer='zeros', trainable=False)
        self.moving_mean = self.add_weight(name='moving_mean', shape=channels, initializer='zeros',
                                           trainable=False)
        self.moving_variance = self.add_weight(name='moving_variance', shape=channels, initializer='ones',
                                               trainable=False)
        if self.original_name:
            for var, suffix in ((self.gamma, 'weight'), (self.beta, 'bias'), (self.moving_mean, 'running_mean'),
                                (self.moving_variance, 'running_var')):
                set_original_name(var, f'{self.original_name}.{suffix}')

    def call(self, inputs, training=None):
        del training  # always inference mode
        scale = self.gamma * ops.rsqrt(self.moving_variance + self.epsilon)
        return inputs * scale + (self.beta - self.moving_mean * scale)

    def get_config(self):
        config = super().get_config()
        config.update(epsilon=self.epsilon, original_name=self.original_name)
        return config



@keras.saving.register_keras_serializable(package='affinity_seg')
class TrainableBatchNorm(keras.layers.BatchNormalization):
    """PyTorch BatchNorm2d in train mode (batch statistics, moving averages), eps 1e-5, channels last.

    Not what PSA does (its BN is always frozen, see `FrozenBatchNorm`): for training ResNet-38 from scratch, where
    frozen statistics of mean 0 / variance 1 leave the deep net unnormalised. Same variables and original names as
    `FrozenBatchNorm` (weight, bias, running_mean, running_var), so weights move between the two.

    Args:
      decay: moving-average decay (Keras `momentum`; PyTorch's momentum 0.1 is decay 0.9).
    """

    def __init__(self, decay=0.9, epsilon=BN_EPSILON, original_name=None, **kwargs):
        kwargs.pop('momentum', None)
        super().__init__(momentum=decay, epsilon=epsilon, **kwargs)
        self.original_name = original_name

    def build(self, input_shape):
        super().build(input_shape)
        if self.original_name:
            for var, suffix in ((self.gamma, 'weight'), (self.beta, 'bias'), (self.moving_mean, 'running_mean'),
                                (self.moving_variance, 'running_var')):
                set_original_name(var, f'{self.original_name}.{suffix}')

    def get_config(self):
        config = super().get_config()
        config.update(decay=config.pop('momentum'), original_name=self.original_name)
        return config


def max_pool_output_size(size, pool_size, strides, padding, ceil_mode=False):
    """PyTorch MaxPool2d output length along one axis (including the ceil_mode last-window rule)."""
    span = size + 2 * padding - pool_size
    if ceil_mode:
        out = -(-span // strides) + 1
        # PyTorch drops a last window that would start inside the right padding only.
        if (out - 1) * strides >= size + padding:
            out -= 1
    else:
        out = span // strides + 1
    return out


@keras.saving.register_keras_serializable(package='affinity_seg')
class TorchMaxPool2D(keras.layers.Layer):
    """nn.MaxPool2d(kernel_size, stride, padding, ceil_mode): pads with -inf on both sides, then 'valid' pooling.

    With ceil_mode=True extra -inf rows/columns are added at the bottom/right so the last partial window exists,
    following PyTorch's output-size rule (`max_pool_output_size`).
    """

    def __init__(self, pool_size=3, strides=2, padding=1, ceil_mode=False, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = _pair(pool_size, 'pool_size')
        self.strides = _pair(strides, 'strides')
        self.padding = _pair(padding, 'padding')
        self.ceil_mode = bool(ceil_mode)
        for k, p in zip(self.pool_size, self.padding):
            if p > k // 2:
                raise ValueError(f'{self.name}: padding {p} must be at most half the pool size {k} (PyTorch rule)')

    def _extra(self, size, axis):
        if not self.ceil_mode or size is None:
            return 0
        k, s, p = self.pool_size[axis], self.strides[axis], self.padding[axis]
        out = max_pool_output_size(size, k, s, p, ceil_mode=True)
        return max(0, (out - 1) * s + k - (size + 2 * p))

    def call(self, inputs):
        ph, pw = self.padding
        height, width = inputs.shape[1], inputs.shape[2]
        if self.ceil_mode and (height is None or width is None):
            raise ValueError(f'{self.name}: ceil_mode needs static spatial sizes')
        eh, ew = self._extra(height, 0), self._extra(width, 1)
        if ph or pw or eh or ew:
            inputs = ops.pad(inputs, [[0, 0], [ph, ph + eh], [pw, pw + ew], [0, 0]],
                             constant_values=float('-inf'))
        return ops.max_pool(inputs, pool_size=self.pool_size, strides=self.strides, padding='valid')

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=self.pool_size, strides=self.strides, padding=self.padding,
                      ceil_mode=self.ceil_mode)
        return config


@keras.saving.register_keras_serializable(package='affinity_seg')
class Dropout2d(keras.layers.SpatialDropout2D):
    """torch.nn.Dropout2d on NHWC: zeroes whole channels per example with probability `rate`, scales by 1/(1-p).

    Active only when called with training=True (the originals' dropouts follow the module's train/eval mode).
    """

    def __init__(self, rate, **kwargs):
        kwargs.pop('data_format', None)  # always channels last (present when rebuilt from a config)
        super().__init__(rate, data_format='channels_last', **kwargs)


def freeze_layers(model, prefixes):
    """Sets trainable=False on every layer named `p` or `p.<...>` for p in prefixes (the `not_training` lists)."""
    prefixes = tuple(prefixes)
    if not prefixes:
        return
    matched = set()
    for layer in model.layers:
        for p in prefixes:
            if layer.name == p or layer.name.startswith(p + '.'):
                layer.trainable = False
                matched.add(p)
    missing = [p for p in prefixes if p not in matched]
    if missing:
        raise ValueError(f'not_training prefixes {missing} match no layer of model {model.name!r}')
