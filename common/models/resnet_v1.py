"""ResNet v1 (bottleneck) with atrous blocks, as AAF's `network/common/resnet_v1.py` (output stride 8).

Variable names equal TF-Slim's (`resnet_v1_101/conv1/weights`,
`resnet_v1_101/block3/unit_7/bottleneck_v1/conv2/BatchNorm/gamma`, ...), recorded with
`common.models.naming.set_original_name`, so `common.weights.slim.load_slim_checkpoint` restores the Slim ImageNet
checkpoint by name.
"""
import keras

from common.models import layers as nn

ENDPOINT_NAMES = ('conv1', 'pool1', 'block1', 'block2', 'block3', 'block4')


def bottleneck(x, name, filters, strides=None, dilation=None, is_training=True, use_global_status=True,
               bn_decay=0.9997, synchronized=False, kernel_initializer='glorot_uniform'):
    """Bottleneck unit: [shortcut] conv1 1x1 -> conv2 3x3 (strided or atrous) -> conv3 1x1 (4*filters) + shortcut.

    Shortcut: 1x1 conv (stride `strides`) + BN when cin != 4*filters; elif strides > 1 a 1x1 max-pool subsample;
    else identity. Args as the original; `name` is the full scope ('<net>/block1/unit_1/bottleneck_v1').
    Returns a Keras tensor [N, H', W', 4*filters].
    """
    if strides is None and dilation is None:
        raise ValueError('None of strides or dilation is specified, set one of them to 1 or bigger number.')
    strides = 1 if strides is None else strides
    if strides > 1 and dilation is not None and dilation > 1:
        raise ValueError('strides and dilation are both specified, set one of them to 1 or None.')
    common = dict(is_training=is_training, use_global_status=use_global_status, decay=bn_decay,
                  synchronized=synchronized, kernel_initializer=kernel_initializer)
    cin = x.shape[-1]
    if cin != filters * 4:
        shortcut = nn.conv(x, f'{name}/shortcut', filters * 4, 1, strides, 'VALID', biased=False, bn=True,
                           relu=False, **common)
    elif strides > 1:
        shortcut = nn.max_pool(x, f'{name}/shortcut', 1, strides, 'VALID')
    else:
        shortcut = x
    y = nn.conv(x, f'{name}/conv1', filters, 1, 1, 'SAME', biased=False, bn=True, relu=True, **common)
    if dilation is not None and dilation > 1:
        # Both originals create atrous kernels with glorot_uniform (multi-GPU MSRA is for `conv` only, Q-A11).
        atrous = dict(common, kernel_initializer='glorot_uniform')
        y = nn.atrous_conv(y, f'{name}/conv2', filters, 3, dilation, 'SAME', biased=False, bn=True, relu=True,
                           **atrous)
    else:
        y = nn.conv(y, f'{name}/conv2', filters, 3, strides, 'VALID' if strides > 1 else 'SAME', biased=False,
                    bn=True, relu=True, **common)
    y = nn.conv(y, f'{name}/conv3', filters * 4, 1, 1, 'SAME', biased=False, bn=True, relu=False, **common)
    y = keras.layers.Add(name=f'{name}/add'.replace('/', '.'))([shortcut, y])
    return keras.layers.ReLU(name=f'{name}/relu'.replace('/', '.'))(y)


def resnet_v1_graph(x, name='resnet_v1_101', filters=(64, 128, 256, 512), num_blocks=(3, 4, 23, 3),
                    strides=(2, 1, 1, 1), dilations=(None, None, 2, 4), is_training=True, use_global_status=True,
                    bn_decay=0.9997, synchronized=False, kernel_initializer='glorot_uniform'):
    """Applies ResNet v1 to a Keras tensor; returns the dict of endpoints `ENDPOINT_NAMES` (block4 = features).

    conv1 has 64 filters whatever `filters` says (hard-coded in the original); the block stride applies to the
    LAST unit of the block; the block dilation to every unit.
    """
    if not (len(filters) == len(num_blocks) == len(strides) == len(dilations)):
        raise ValueError(f'filters {filters}, num_blocks {num_blocks}, strides {strides} and dilations '
                         f'{dilations} must have the same length')
    common = dict(is_training=is_training, use_global_status=use_global_status, bn_decay=bn_decay,
                  synchronized=synchronized, kernel_initializer=kernel_initializer)
    endpoints = {}
    x = nn.conv(x, f'{name}/conv1', 64, 7, 2, 'VALID', biased=False, bn=True, relu=True,
                is_training=is_training, use_global_status=use_global_status, decay=bn_decay,
                synchronized=synchronized, kernel_initializer=kernel_initializer)
    endpoints['conv1'] = x
    # Symmetric zero pad + VALID (Q-A12), not Slim's SAME pooling; inputs are post-ReLU so zeros are neutral.
    x = nn.max_pool(x, f'{name}/pool1', 3, 2, 'VALID')
    endpoints['pool1'] = x
    for block_index, (block_filters, units, block_stride, dilation) in enumerate(
            zip(filters, num_blocks, strides, dilations)):
        for unit_index in range(units):
            unit_stride = block_stride if unit_index == units - 1 else 1
            x = bottleneck(x, f'{name}/block{block_index + 1}/unit_{unit_index + 1}/bottleneck_v1', block_filters,
                           strides=unit_stride, dilation=dilation, **common)
        endpoints[f'block{block_index + 1}'] = x
    return endpoints


def build_resnet_v1(filters=(64, 128, 256, 512), num_blocks=(3, 4, 23, 3), strides=(2, 1, 1, 1),
                    dilations=(None, None, 2, 4), use_global_status=True, name='resnet_v1_101', bn_decay=0.9997,
                    is_training=True, synchronized=False, kernel_initializer='glorot_uniform',
                    return_endpoints=False, input_shape=(None, None, 3)):
    """Builds ResNet v1 as a keras.Model: images [N, H, W, 3] (mean-subtracted RGB) -> features.

    Args:
      filters, num_blocks, strides, dilations: per block, as the original `resnet_v1` (conv1 is always 64).
      use_global_status: BN always uses the moving statistics and beta/gamma are frozen (Q-A8). Otherwise
        calling with training=True uses batch statistics and updates the moving averages (TF1 semantics).
      name: top scope of the original variable names ('resnet_v1_101').
      bn_decay: moving-average decay of every BN (0.9997).
      is_training: conv kernels trainable (the original's `is_training`).
      synchronized: cross-replica BN moments under tf.distribute.
      kernel_initializer: 'glorot_uniform' (single-GPU original) or 'msra_uniform' (multi-GPU original; applies to
        plain/strided convs, atrous convs stay glorot_uniform as there).
      return_endpoints: the model outputs a dict {'conv1', 'pool1', 'block1'..'block4'} instead of block4 only.
      input_shape: (H, W, 3); None sizes are dynamic.
    Returns:
      keras.Model; features [N, ceil(H/8), ceil(W/8), 4*filters[-1]] for the default strides.
    """
    images = keras.Input(shape=tuple(input_shape), name='images')
    endpoints = resnet_v1_graph(images, name=name, filters=filters, num_blocks=num_blocks, strides=strides,
                                dilations=dilations, is_training=is_training, use_global_status=use_global_status,
                                bn_decay=bn_decay, synchronized=synchronized, kernel_initializer=kernel_initializer)
    last = f'block{len(filters)}'
    outputs = endpoints if return_endpoints else endpoints[last]
    return keras.Model(images, outputs, name=name)


def resnet_v1_50(**kwargs):
    """ResNet-50 v1, output stride 8 (blocks 3/4/6/3, dilations 2/4). kwargs go to `build_resnet_v1`."""
    kwargs.setdefault('name', 'resnet_v1_50')
    return build_resnet_v1(num_blocks=(3, 4, 6, 3), **kwargs)


def resnet_v1_101(**kwargs):
    """ResNet-101 v1, output stride 8 (blocks 3/4/23/3, dilations 2/4), the AAF/SegSort backbone."""
    kwargs.setdefault('name', 'resnet_v1_101')
    return build_resnet_v1(num_blocks=(3, 4, 23, 3), **kwargs)


def resnet_v1_152(**kwargs):
    """ResNet-152 v1, output stride 8 (blocks 3/8/36/3, dilations 2/4)."""
    kwargs.setdefault('name', 'resnet_v1_152')
    return build_resnet_v1(num_blocks=(3, 8, 36, 3), **kwargs)
