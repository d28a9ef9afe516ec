"""Keras 3 layers with the semantics of AAF's TF1 `network/common/layers.py` (channels-last).

* `BatchNormTF1`: TF1 batch norm with biased variance for both normalisation and the moving update, per-layer
  decay, epsilon 1e-3, optional cross-replica (synchronized) moments.
* `Conv2DTF1`: convolution whose strided form is TF-Slim's `conv2d_same` (explicit zero pad [(k-1)//2, rest] then
  VALID) and whose dilated form is a SAME (symmetric) atrous convolution; variables `weights` / `biases`.
* `PoolTF1`: the originals' max/avg pool (explicit zero pad when s > 1 and padding != 'SAME').
* `LegacyResizeBilinear` / `resize_bilinear_legacy`: tf.compat.v1.image.resize_bilinear (align_corners=False,
  half_pixel_centers=False).
* `conv`, `atrous_conv`, `max_pool`, `avg_pool`: functional helpers with the originals' names and argument order
  that apply these layers to (Keras) tensors.

Every variable gets its original TF1 name recorded with `common.models.naming.set_original_name`, e.g.
`resnet_v1_101/conv1/weights`, `resnet_v1_101/conv1/BatchNorm/moving_mean`.
"""
import keras
import tensorflow as tf

from common.models.naming import set_original_name
from common.ops.resize import resize_bilinear_legacy  # noqa: F401  (re-exported: part of the layer API)

BN_EPSILON = 1e-3


def kernel_initializer_by_name(name):
    """'glorot_uniform' (single-GPU original, TF1 `tf.get_variable` default) or 'msra_uniform'
    (multi-GPU original: variance_scaling(2.0, fan_in, uniform) = U(+-sqrt(6/fan_in)))."""
    if name in (None, 'glorot_uniform'):
        return keras.initializers.GlorotUniform()
    if name == 'msra_uniform':
        return keras.initializers.VarianceScaling(2.0, 'fan_in', 'uniform')
    if isinstance(name, str):
        raise ValueError(f"unknown kernel initializer {name!r}: use 'glorot_uniform' or 'msra_uniform'")
    return name


def _keras_layer_name(original_scope):
    # Keras forbids '/' in names; '.' keeps the original hierarchy readable and unique within a model.
    return original_scope.replace('/', '.')


def _record(variable, original):
    set_original_name(variable, original)
    # Keras 3 forbids '/' in names but `path` is only a label (optimizer slot names, summaries): make it the
    # original name too, so tools that print `variable.path` show TF1 names.
    try:
        variable._path = original
    except AttributeError:
        pass


@keras.saving.register_keras_serializable(package='affinity_seg')
class BatchNormTF1(keras.layers.Layer):
    """TF1 batch normalisation of the AAF originals (`network/common/layers.py:batch_norm`).

    Variables (original names `<scope>/{beta,gamma,moving_mean,moving_variance}`): beta 0, gamma 1,
    moving_mean 0, moving_variance 1. beta/gamma are trainable iff `not use_global_status` (Q-A8: the original
    freezes the affine parameters together with the statistics).

    Behaviour of `call(x, training)`:
      * `use_global_status=True` or `training` falsy: normalise with the moving statistics.
      * otherwise: moments over all axes but the last (biased variance), normalise with them and update
        `moving = moving * decay + batch * (1 - decay)` (biased variance, as the original).
    `synchronized=True`: under a tf.distribute strategy with more than one replica the moments are global-batch
    moments (all-reduced sum / count / sum of squared deviations); gradients flow through them, so the result
    equals single-device BN on the concatenated batch.

    Args:
      decay: moving-average decay (0.9997 backbone, 0.99 PSP head).
      epsilon: 1e-3 as in the original.
      use_global_status: always use (and never update) the moving statistics; freeze beta/gamma.
      synchronized: cross-replica moments in training mode.
      original_scope: original variable scope, e.g. 'resnet_v1_101/conv1/BatchNorm'.
    """

    def __init__(self, decay=0.9997, epsilon=BN_EPSILON, use_global_status=True, synchronized=False,
                 original_scope=None, **kwargs):
        if original_scope is not None and 'name' not in kwargs:
            kwargs['name'] = _keras_layer_name(original_scope)
        super().__init__(**kwargs)
        self.decay = float(decay)
        self.epsilon = float(epsilon)
        self.use_global_status = bool(use_global_status)
        self.synchronized = bool(synchronized)
        self.original_scope = original_scope or self.name

    def build(self, input_shape):
        channels = int(input_shape[-1])
        affine_trainable = not self.use_global_status
        self.beta = self.add_weight(shape=(channels,), name='beta', initializer='zeros',
                                    trainable=affine_trainable)
        self.gamma = self.add_weight(shape=(channels,), name='gamma', initializer='ones',
                                     trainable=affine_trainable)
        # 'mean' aggregation: replicas assign identical values under synchronized BN (and average otherwise).
        self.moving_mean = self.add_weight(shape=(channels,), name='moving_mean', initializer='zeros',
                                           trainable=False, aggregation='mean')
        self.moving_variance = self.add_weight(shape=(channels,), name='moving_variance', initializer='ones',
                                               trainable=False, aggregation='mean')
        for var, short in ((self.beta, 'beta'), (self.gamma, 'gamma'), (self.moving_mean, 'moving_mean'),
                           (self.moving_variance, 'moving_variance')):
            _record(var, f'{self.original_scope}/{short}')

    def _moments(self, x):
        axes = list(range(len(x.shape) - 1))
        replica_ctx = tf.distribute.get_replica_context()
        if (self.synchronized and replica_ctx is not None and replica_ctx.num_replicas_in_sync > 1):
            local_sum = tf.reduce_sum(x, axis=axes)
            local_count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), x.dtype)
            total_sum, total_count = replica_ctx.all_reduce(
                tf.distribute.ReduceOp.SUM, [local_sum, local_count])
            mean = total_sum / total_count
            # Deviations from the (gradient-stopped) global mean, as the multi-GPU original; the gradient through
            # the mean term of the variance is zero anyway.
            local_sq = tf.reduce_sum(tf.square(x - tf.stop_gradient(mean)), axis=axes)
            variance = replica_ctx.all_reduce(tf.distribute.ReduceOp.SUM, local_sq) / total_count
            return mean, variance
        mean, variance = tf.nn.moments(x, axes=axes)
        return mean, variance

    def call(self, inputs, training=None):
        x = tf.convert_to_tensor(inputs)
        if self.use_global_status or not training:
            mean, variance = self.moving_mean, self.moving_variance
        else:
            mean, variance = self._moments(x)
            self.moving_mean.assign(self.moving_mean * self.decay + mean * (1.0 - self.decay))
            self.moving_variance.assign(self.moving_variance * self.decay + variance * (1.0 - self.decay))
        return tf.nn.batch_normalization(x, tf.convert_to_tensor(mean), tf.convert_to_tensor(variance),
                                         tf.convert_to_tensor(self.beta), tf.convert_to_tensor(self.gamma),
                                         self.epsilon)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(decay=self.decay, epsilon=self.epsilon, use_global_status=self.use_global_status,
                      synchronized=self.synchronized, original_scope=self.original_scope)
        return config


def same_strided_padding(kernel_size):
    """Explicit pad (begin, end) of the originals' strided conv/pool: [(k-1)//2, (k-1) - (k-1)//2]."""
    total = kernel_size - 1
    return total // 2, total - total // 2


@keras.saving.register_keras_serializable(package='affinity_seg')
class Conv2DTF1(keras.layers.Layer):
    """Convolution with the originals' padding rules and variable names `<scope>/weights`, `<scope>/biases`.

    * `dilation > 1`: atrous conv (`tf.nn.atrous_conv2d`), `padding` as given (SAME = symmetric d*(k-1)/2).
    * `strides > 1`: explicit zero pad [(k-1)//2, rest] on H and W, then conv with `padding` (always 'VALID' in the
      originals => TF-Slim `conv2d_same`).
    * else: plain conv with `padding`.
    Kernel [k, k, cin, filters] (glorot_uniform or MSRA-uniform), bias [filters] glorot_uniform (1-D fans:
    U(+-sqrt(3/filters)), Q-A11). Both trainable iff `is_training` (Q-A8).
    """

    def __init__(self, filters, kernel_size, strides=1, padding='SAME', dilation=1, biased=True,
                 is_training=True, kernel_initializer='glorot_uniform', original_scope=None, **kwargs):
        if original_scope is not None and 'name' not in kwargs:
            kwargs['name'] = _keras_layer_name(original_scope)
        super().__init__(**kwargs)
        padding = padding.upper()
        if padding not in ('SAME', 'VALID'):
            raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
        if strides > 1 and dilation > 1:
            raise ValueError('strides and dilation are both > 1; set one of them to 1')
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.padding = padding
        self.dilation = int(dilation)
        self.biased = bool(biased)
        self.is_training = bool(is_training)
        self.kernel_initializer_name = kernel_initializer
        self.original_scope = original_scope or self.name

    def build(self, input_shape):
        cin = int(input_shape[-1])
        k = self.kernel_size
        self.kernel = self.add_weight(shape=(k, k, cin, self.filters), name='weights',
                                      initializer=kernel_initializer_by_name(self.kernel_initializer_name),
                                      trainable=self.is_training)
        _record(self.kernel, f'{self.original_scope}/weights')
        self.bias = None
        if self.biased:
            self.bias = self.add_weight(shape=(self.filters,), name='biases',
                                        initializer=keras.initializers.GlorotUniform(), trainable=self.is_training)
            _record(self.bias, f'{self.original_scope}/biases')

    def call(self, inputs):
        x = tf.convert_to_tensor(inputs)
        kernel = tf.convert_to_tensor(self.kernel)
        if self.dilation > 1:
            # The original's op (space-to-batch); also the only dilated conv with a CPU gradient.
            y = tf.nn.atrous_conv2d(x, kernel, self.dilation, self.padding)
        else:
            if self.strides > 1:
                begin, end = same_strided_padding(self.kernel_size)
                x = tf.pad(x, [[0, 0], [begin, end], [begin, end], [0, 0]])
            y = tf.nn.conv2d(x, kernel, strides=self.strides, padding=self.padding)
        if self.bias is not None:
            y = tf.nn.bias_add(y, tf.convert_to_tensor(self.bias))
        return y

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        return (n, _conv_out(h, self), _conv_out(w, self), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, strides=self.strides,
                      padding=self.padding, dilation=self.dilation, biased=self.biased,
                      is_training=self.is_training, kernel_initializer=self.kernel_initializer_name,
                      original_scope=self.original_scope)
        return config


def _conv_out(size, layer):
    if size is None:
        return None
    k = layer.kernel_size
    if layer.dilation > 1:
        eff = (k - 1) * layer.dilation + 1
        return size if layer.padding == 'SAME' else size - eff + 1
    if layer.strides > 1:
        size = size + k - 1
    if layer.padding == 'SAME':
        return -(-size // layer.strides)
    return (size - k) // layer.strides + 1


@keras.saving.register_keras_serializable(package='affinity_seg')
class PoolTF1(keras.layers.Layer):
    """The originals' `max_pool`/`avg_pool`: explicit zero pad [(k-1)//2, rest] when strides > 1 and padding is
    not 'SAME', then tf.nn pooling with `padding`."""

    def __init__(self, kernel_size, strides, padding='VALID', pool_type='max', **kwargs):
        super().__init__(**kwargs)
        if pool_type not in ('max', 'avg'):
            raise ValueError(f"pool_type must be 'max' or 'avg', got {pool_type!r}")
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.padding = padding.upper()
        self.pool_type = pool_type

    def call(self, inputs):
        x = tf.convert_to_tensor(inputs)
        k, s = self.kernel_size, self.strides
        if s > 1 and self.padding != 'SAME':
            begin, end = same_strided_padding(k)
            x = tf.pad(x, [[0, 0], [begin, end], [begin, end], [0, 0]])
        pool = tf.nn.max_pool2d if self.pool_type == 'max' else tf.nn.avg_pool2d
        return pool(x, ksize=k, strides=s, padding=self.padding)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape

        def out(size):
            if size is None:
                return None
            if self.strides > 1 and self.padding != 'SAME':
                size += self.kernel_size - 1
            if self.padding == 'SAME':
                return -(-size // self.strides)
            return (size - self.kernel_size) // self.strides + 1
        return (n, out(h), out(w), c)

    def get_config(self):
        config = super().get_config()
        config.update(kernel_size=self.kernel_size, strides=self.strides, padding=self.padding,
                      pool_type=self.pool_type)
        return config


@keras.saving.register_keras_serializable(package='affinity_seg')
class LegacyResizeBilinear(keras.layers.Layer):
    """Keras layer around `resize_bilinear_legacy` to a fixed (out_h, out_w)."""

    def __init__(self, size, **kwargs):
        super().__init__(**kwargs)
        self.size = (int(size[0]), int(size[1]))

    def call(self, inputs):
        return resize_bilinear_legacy(inputs, self.size)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size[0], self.size[1], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(size=self.size)
        return config


def conv(x, name, filters, kernel_size, strides, padding, relu=True, biased=True, bn=True, decay=0.9997,
         is_training=True, use_global_status=True, synchronized=False, kernel_initializer='glorot_uniform'):
    """The original `conv`: conv (conv2d_same padding when strides > 1) [+ bias] [+ BatchNormTF1] [+ ReLU].

    Args:
      x: Keras tensor [N, H, W, Cin].
      name: full original scope, e.g. 'resnet_v1_101/block1/unit_1/bottleneck_v1/conv1' (variables
        `<name>/weights`, `<name>/biases`, `<name>/BatchNorm/*`).
      filters, kernel_size, strides, padding: as the original ('VALID' with strides > 1 = conv2d_same).
      relu, biased, bn, decay: as the original.
      is_training: conv variables trainable (Q-A8).
      use_global_status: BN uses moving statistics and freezes beta/gamma.
      synchronized: cross-replica BN moments.
      kernel_initializer: 'glorot_uniform' (single-GPU original) or 'msra_uniform' (multi-GPU original).
    Returns:
      Keras tensor [N, H', W', filters].
    """
    y = Conv2DTF1(filters, kernel_size, strides=strides, padding=padding, biased=biased, is_training=is_training,
                  kernel_initializer=kernel_initializer, original_scope=name)(x)
    return _bn_relu(y, name, relu, bn, decay, use_global_status, synchronized)


def atrous_conv(x, name, filters, kernel_size, dilation, padding, relu=True, biased=True, bn=True, decay=0.9997,
                is_training=True, use_global_status=True, synchronized=False,
                kernel_initializer='glorot_uniform'):
    """The original `atrous_conv`: dilated conv (SAME = symmetric pad) [+ bias] [+ BatchNormTF1] [+ ReLU].

    Arguments as `conv`, with `dilation` instead of strides. The multi-GPU original keeps glorot_uniform here.
    """
    y = Conv2DTF1(filters, kernel_size, strides=1, padding=padding, dilation=dilation, biased=biased,
                  is_training=is_training, kernel_initializer=kernel_initializer, original_scope=name)(x)
    return _bn_relu(y, name, relu, bn, decay, use_global_status, synchronized)


def _bn_relu(y, name, relu, bn, decay, use_global_status, synchronized):
    if bn:
        y = BatchNormTF1(decay=decay, use_global_status=use_global_status, synchronized=synchronized,
                         original_scope=f'{name}/BatchNorm')(y)
    if relu:
        y = keras.layers.ReLU(name=_keras_layer_name(name) + '.relu')(y)
    return y


def max_pool(x, name, kernel_size, strides, padding):
    """The original `max_pool` (explicit pad when strides > 1 and padding != 'SAME'). `name`: unique scope."""
    return PoolTF1(kernel_size, strides, padding, 'max', name=_keras_layer_name(name))(x)


def avg_pool(x, name, kernel_size, strides, padding):
    """The original `avg_pool` (explicit pad when strides > 1 and padding != 'SAME'). `name`: unique scope."""
    return PoolTF1(kernel_size, strides, padding, 'avg', name=_keras_layer_name(name))(x)
