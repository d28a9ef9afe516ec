"""PSPNet on ResNet-101 v1, as AAF's `seg_models/models/pspnet.py` (also SegSort's embedding network).

Head (under `<backbone name>/block5/`): average pools to 1/2/3/6 bins (the original's VALID pools with kernel =
stride = pool_k // n on the STATIC size, pool_k = input/8), each followed by `pool{n}/conv1` 1x1 (psp_channels, no
bias, BN decay 0.99, ReLU) and legacy bilinear upsampling (tf.compat.v1 resize_bilinear, corner-anchored) to
pool_k x pool_k; concat [pool1, pool2, pool3, pool6, backbone]; `conv2` 3x3 SAME (psp_channels, BN 0.99, ReLU);
`fc1_voc12` 1x1 with bias -> logits.

SegSort's embedding head is this same builder with `num_classes=embedding_dim` (32): the raw, unnormalised
embedding is `block5/fc1_voc12` (lr x10 group, re-initialised by --not_restore_classifier).
"""
import keras
import tensorflow as tf

from common.models import layers as nn
from common.models.resnet_v1 import resnet_v1_graph

PSP_BINS = (1, 2, 3, 6)


def backbone_kwargs(backbone, use_global_status, is_training, synchronized, kernel_initializer):
    """build_resnet_v1 kwargs from a user dict; the head's flags are the defaults (the original passes the same
    use_global_status / is_training to backbone and head)."""
    kwargs = dict(name='resnet_v1_101', use_global_status=use_global_status, is_training=is_training,
                  synchronized=synchronized, kernel_initializer=kernel_initializer)
    kwargs.update(dict(backbone or {}))
    for unsupported in ('return_endpoints', 'input_shape'):
        kwargs.pop(unsupported, None)
    return kwargs


def _square_size(input_size):
    if isinstance(input_size, int):
        return input_size, input_size
    h, w = (int(s) for s in input_size)
    return h, w


@keras.saving.register_keras_serializable(package='affinity_seg')
class AdaptiveAvgPoolBins(keras.layers.Layer):
    """Average pooling to n x n bins of a static feature map (bin i covers [floor(i*H/n), ceil((i+1)*H/n)),
    PyTorch's adaptive pooling); equals the original VALID pool when H and W are multiples of n."""

    def __init__(self, bins, **kwargs):
        super().__init__(**kwargs)
        self.bins = int(bins)

    def call(self, inputs):
        h, w = inputs.shape[1], inputs.shape[2]
        n = self.bins
        rows = []
        for i in range(n):
            y0, y1 = (i * h) // n, -(-((i + 1) * h) // n)
            cols = []
            for j in range(n):
                x0, x1 = (j * w) // n, -(-((j + 1) * w) // n)
                cols.append(tf.reduce_mean(inputs[:, y0:y1, x0:x1, :], axis=[1, 2], keepdims=True))
            rows.append(tf.concat(cols, axis=2))
        return tf.concat(rows, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.bins, self.bins, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(bins=self.bins)
        return config


def pspnet_head(features, num_classes, scope, psp_channels=512, is_training=True, use_global_status=False,
                head_bn_decay=0.99, adaptive_pooling=False, synchronized=False,
                kernel_initializer='glorot_uniform', endpoints=None):
    """Applies the PSP module + classifier to backbone features (Keras tensor with static H, W).

    Args:
      features: [N, pool_k, pool_k, C] backbone output.
      num_classes: output channels of `block5/fc1_voc12`.
      scope: variable scope of the head, e.g. 'resnet_v1_101' (variables under `<scope>/block5/`).
      endpoints: optional dict filled with 'pool{n}_avg', 'pool{n}_conv', 'pool{n}_up', 'concat', 'conv2'.
    Returns:
      logits [N, pool_k, pool_k, num_classes].
    """
    h, w = features.shape[1], features.shape[2]
    common = dict(is_training=is_training, use_global_status=use_global_status, decay=head_bn_decay,
                  synchronized=synchronized, kernel_initializer=kernel_initializer)
    branches = []
    for n in PSP_BINS:
        if adaptive_pooling:
            pooled = AdaptiveAvgPoolBins(n, name=f'{scope}.block5.pool{n}')(features)
        else:
            # Plain tf.nn.avg_pool in the original (not nn.avg_pool): no explicit padding.
            pooled = keras.layers.AveragePooling2D(h // n, strides=h // n, padding='valid',
                                                   name=f'{scope}.block5.pool{n}')(features)
        conv = nn.conv(pooled, f'{scope}/block5/pool{n}/conv1', psp_channels, 1, 1, 'SAME', biased=False,
                       bn=True, relu=True, **common)
        up = nn.LegacyResizeBilinear((h, w), name=f'{scope}.block5.pool{n}.resize')(conv)
        branches.append(up)
        if endpoints is not None:
            endpoints.update({f'pool{n}_avg': pooled, f'pool{n}_conv': conv, f'pool{n}_up': up})
    x = keras.layers.Concatenate(axis=3, name=f'{scope}.block5.concat')(branches + [features])
    x = nn.conv(x, f'{scope}/block5/conv2', psp_channels, 3, 1, 'SAME', biased=False, bn=True, relu=True, **common)
    if endpoints is not None:
        endpoints.update(concat=branches, conv2=x)
    return nn.conv(x, f'{scope}/block5/fc1_voc12', num_classes, 1, 1, 'SAME', biased=True, bn=False, relu=False,
                   is_training=is_training, kernel_initializer=kernel_initializer)


def build_pspnet(num_classes, input_size, backbone=None, psp_channels=512, use_global_status=False,
                 head_bn_decay=0.99, adaptive_pooling=False, name='pspnet_resnet101', is_training=True,
                 synchronized=False, kernel_initializer='glorot_uniform', return_endpoints=False):
    """Builds PSPNet-ResNet-101 (the original `pspnet_resnet101`) as a keras.Model.

    Args:
      num_classes: classes (or SegSort embedding_dim).
      input_size: int S or (H, W); the original requires H == W and S % 48 == 0 (Q-A15): the pool kernels come
        from the static size pool_k = S/8. Other sizes raise ValueError unless `adaptive_pooling=True`.
      backbone: dict of build_resnet_v1 kwargs (filters, num_blocks, strides, dilations, name, bn_decay, ...);
        default ResNet-101. use_global_status / is_training / synchronized / kernel_initializer default to this
        builder's values.
      psp_channels: channels of the four branch convs and block5/conv2 (512 in the original).
      use_global_status: BN everywhere uses moving statistics and beta/gamma are frozen; otherwise training=True
        uses batch statistics and updates the moving averages.
      head_bn_decay: BN decay of the PSP head (0.99).
      adaptive_pooling: explicit opt-in for sizes the original rejects: bins by adaptive average pooling on
        whatever static size the backbone gives (equal to the original pools when they tile exactly).
      name: Keras model name (the variable scope is the backbone's name, 'resnet_v1_101').
      is_training: conv variables trainable (Q-A8).
      synchronized: cross-replica BN moments.
      kernel_initializer: 'glorot_uniform' (single-GPU original) or 'msra_uniform' (multi-GPU original conv()).
      return_endpoints: model outputs a dict with 'logits', 'backbone', 'pool{n}_{avg,conv,up}', 'conv2' and the
        backbone endpoints 'conv1', 'pool1', 'block1'..'block4'.
    Returns:
      keras.Model images [N, H, W, 3] (mean-subtracted RGB float32) -> logits [N, H/8, W/8, num_classes].
    """
    h, w = _square_size(input_size)
    if not adaptive_pooling and (h != w or h % 48 != 0):
        raise ValueError(
            f'PSPNet input_size {input_size!r}: the original requires a square input whose side is a multiple of '
            f'48 (pyramid pool kernels come from the static size side/8). Use e.g. 336, 480 or 720, or pass '
            f'adaptive_pooling=True to pool other sizes adaptively (not the original behaviour).')
    bb = backbone_kwargs(backbone, use_global_status, is_training, synchronized, kernel_initializer)
    images = keras.Input(shape=(h, w, 3), name='images')
    endpoints = resnet_v1_graph(images, **bb)
    features = endpoints[f'block{len(bb.get("filters", (0, 0, 0, 0)))}']
    head_endpoints = {}
    logits = pspnet_head(features, num_classes, bb['name'], psp_channels=psp_channels, is_training=is_training,
                         use_global_status=use_global_status, head_bn_decay=head_bn_decay,
                         adaptive_pooling=adaptive_pooling, synchronized=synchronized,
                         kernel_initializer=kernel_initializer, endpoints=head_endpoints)
    if return_endpoints:
        head_endpoints.pop('concat')
        outputs = dict(endpoints, backbone=features, logits=logits, **head_endpoints)
    else:
        outputs = logits
    return keras.Model(images, outputs, name=name)


def pspnet_resnet101(num_classes, input_size, **kwargs):
    """Alias with the original's name: `build_pspnet(num_classes, input_size, **kwargs)`."""
    return build_pspnet(num_classes, input_size, **kwargs)
