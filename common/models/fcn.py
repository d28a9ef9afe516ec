"""FCN head on ResNet-101 v1, as AAF's `seg_models/models/fcn8s.py` (library only in the originals).

The original asserts the PSPNet input rule (square, side % 48 == 0) and puts a 1x1 classifier with bias,
`<backbone>/block5/fc1_voc12`, directly on the stride-8 backbone output.
"""
import keras

from common.models import layers as nn
from common.models.pspnet import _square_size, backbone_kwargs
from common.models.resnet_v1 import resnet_v1_graph


def build_fcn(num_classes, input_size, backbone=None, use_global_status=False, is_training=True,
              check_input_size=True, name='fcn8s_resnet101', synchronized=False,
              kernel_initializer='glorot_uniform'):
    """Builds the FCN (`fcn8s_resnet101`) as a keras.Model.

    Args:
      num_classes: output channels.
      input_size: int S or (H, W); the original requires H == W and S % 48 == 0; `check_input_size=False` is the
        explicit opt-out (the head itself works at any size).
      backbone: dict of build_resnet_v1 kwargs (default ResNet-101).
      use_global_status, is_training, synchronized, kernel_initializer: as build_pspnet.
    Returns:
      keras.Model images [N, H, W, 3] -> logits [N, H/8, W/8, num_classes].
    """
    h, w = _square_size(input_size)
    if check_input_size and (h != w or h % 48 != 0):
        raise ValueError(f'FCN input_size {input_size!r}: the original requires a square input whose side is a '
                         f'multiple of 48; pass check_input_size=False to allow other sizes.')
    bb = backbone_kwargs(backbone, use_global_status, is_training, synchronized, kernel_initializer)
    images = keras.Input(shape=(h, w, 3), name='images')
    endpoints = resnet_v1_graph(images, **bb)
    features = endpoints[f'block{len(bb.get("filters", (0, 0, 0, 0)))}']
    logits = nn.conv(features, f'{bb["name"]}/block5/fc1_voc12', num_classes, 1, 1, 'SAME', biased=True, bn=False,
                     relu=False, is_training=is_training, kernel_initializer=kernel_initializer)
    return keras.Model(images, logits, name=name)


def fcn8s_resnet101(num_classes, input_size, **kwargs):
    """Alias with the original's name: `build_fcn(num_classes, input_size, **kwargs)`."""
    return build_fcn(num_classes, input_size, **kwargs)
