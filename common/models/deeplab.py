"""DeepLab-v2 ASPP on ResNet-101 v1, as AAF's `seg_models/models/deeplab.py` (library only in the originals).

Four 3x3 atrous convs (dilations 6/12/18/24, SAME, with bias, no BN/ReLU) on the backbone output, summed in that
order. Their variables are `<backbone>/fc1_c{0..3}/{weights,biases}`, NOT under block5 (Q-A20: lr x1 and restored
even with --not-restore-classifier).
"""
import keras

from common.models import layers as nn
from common.models.pspnet import backbone_kwargs
from common.models.resnet_v1 import resnet_v1_graph

ASPP_DILATIONS = (6, 12, 18, 24)


def build_deeplab(num_classes, backbone=None, use_global_status=False, is_training=True,
                  aspp_dilations=ASPP_DILATIONS, name='deeplab_resnet101', synchronized=False,
                  kernel_initializer='glorot_uniform', return_endpoints=False, input_shape=(None, None, 3)):
    """Builds DeepLab-v2 (ResNet-101 + ASPP) as a keras.Model; any input size (no assertion in the original).

    Args:
      num_classes: output channels.
      backbone: dict of build_resnet_v1 kwargs (default ResNet-101); use_global_status / is_training /
        synchronized / kernel_initializer default to this builder's values.
      use_global_status: BN uses moving statistics, beta/gamma frozen; else training=True uses batch statistics.
      is_training: conv variables trainable (Q-A8).
      aspp_dilations: (6, 12, 18, 24) in the original.
      return_endpoints: outputs a dict with 'logits', 'backbone', 'aspp0'..'aspp3' and the backbone endpoints.
      input_shape: (H, W, 3), None = dynamic.
    Returns:
      keras.Model images [N, H, W, 3] -> logits [N, ceil(H/8), ceil(W/8), num_classes].
    """
    bb = backbone_kwargs(backbone, use_global_status, is_training, synchronized, kernel_initializer)
    images = keras.Input(shape=tuple(input_shape), name='images')
    endpoints = resnet_v1_graph(images, **bb)
    features = endpoints[f'block{len(bb.get("filters", (0, 0, 0, 0)))}']
    scope = bb['name']
    branches = [nn.atrous_conv(features, f'{scope}/fc1_c{i}', num_classes, 3, d, 'SAME', relu=False, biased=True,
                               bn=False, is_training=is_training)
                for i, d in enumerate(aspp_dilations)]
    logits = keras.layers.Add(name=f'{scope}.fc1_sum')(branches)
    if return_endpoints:
        outputs = dict(endpoints, backbone=features, logits=logits,
                       **{f'aspp{i}': b for i, b in enumerate(branches)})
    else:
        outputs = logits
    return keras.Model(images, outputs, name=name)


def deeplab_resnet101(num_classes, **kwargs):
    """Alias with the original's name: `build_deeplab(num_classes, **kwargs)`."""
    return build_deeplab(num_classes, **kwargs)
