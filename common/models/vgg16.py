"""VGG-16-D, DeepLab-LargeFOV 20M variant, as used by PSA (psa network/vgg16d.py; psa_a2gnn.md 5.2).

3x3 convs with bias + ReLU; pool1-3 are 3x3/s2/p1 max-pools with -inf padding, pool4 is 3x3/s1/p1, conv5_x are
dilated by 2, fc6 is a 3x3 conv dilated by `fc6_dilation` (1 for the cls net, 4 for the aff net), drop6 is a
channel dropout (0.5), fc7 a 1x1 conv. Output stride 8. Input: BGR mean-subtracted image [N,H,W,3] (the
original `Normalize` swaps RGB -> BGR and subtracts (104.008, 116.669, 122.675)). Variables record their PyTorch
state-dict keys ('conv1_1.weight', 'fc7.bias', ...).
"""

import collections

import keras

from common.models import torch_layers

# Output channels of conv1_x, conv2_x, conv3_x, conv4_x, conv5_x, fc6/fc7 in the original.
VGG16_WIDTHS = (64, 128, 256, 512, 512, 1024)
# BGR channel means subtracted by psa vgg16d.Normalize (B, G, R order of the output channels).
VGG16_BGR_MEAN = (104.008, 116.669, 122.675)
ENDPOINTS = ('conv4', 'conv5', 'conv5fc')
# The originals' not_training list (cls and aff nets): weights and biases frozen.
NOT_TRAINING = ('conv1_1', 'conv1_2', 'conv2_1', 'conv2_2')

_BLOCK_DEPTHS = (2, 2, 3, 3, 3)


def vgg16_widths(width_multiplier=1.0, widths=None):
    """The 6 channel widths (conv1..conv5 blocks, fc6/fc7), scaled (at least 1 channel each)."""
    if widths is None:
        widths = tuple(max(1, int(round(w * width_multiplier))) for w in VGG16_WIDTHS)
    widths = tuple(int(w) for w in widths)
    if len(widths) != 6:
        raise ValueError(f'widths must have 6 entries (conv1..conv5 blocks, fc6/fc7), got {widths}')
    return widths


def vgg16_weight_shapes(fc6_dilation=1, width_multiplier=1.0, widths=None):
    """PyTorch state-dict keys -> shapes (OIHW / [O]) of the backbone conv1_1 ... fc7, in module order.

    fc6_dilation does not change shapes; it is accepted so callers can pass the same arguments as the builder.
    """
    del fc6_dilation
    widths = vgg16_widths(width_multiplier, widths)
    shapes = collections.OrderedDict()
    cin = 3
    for block, (depth, width) in enumerate(zip(_BLOCK_DEPTHS, widths[:5]), start=1):
        for i in range(1, depth + 1):
            shapes[f'conv{block}_{i}.weight'] = (width, cin, 3, 3)
            shapes[f'conv{block}_{i}.bias'] = (width,)
            cin = width
    shapes['fc6.weight'] = (widths[5], cin, 3, 3)
    shapes['fc6.bias'] = (widths[5],)
    shapes['fc7.weight'] = (widths[5], widths[5], 1, 1)
    shapes['fc7.bias'] = (widths[5],)
    return shapes


def build_vgg16d(fc6_dilation=1, width_multiplier=1.0, widths=None, return_endpoints=ENDPOINTS,
                 not_training=(), input_shape=(None, None, 3), name='vgg16d'):
    """Builds VGG-16-D (psa vgg16d.Net.forward_as_dict) as a dict-output keras.Model.

    Args:
      fc6_dilation: dilation (= padding) of fc6: 1 for vgg16_cls, 4 for vgg16_aff.
      width_multiplier: channel scale (1.0 = original); widths: explicit 6 widths (overrides it).
      return_endpoints: subset of ('conv4', 'conv5', 'conv5fc'): conv4 = relu(conv4_3) (stride 8, before pool4),
        conv5 = relu(conv5_3), conv5fc = relu(fc7(drop6(relu(fc6)))) (all stride 8).
      not_training: layer names to freeze (NOT_TRAINING for the originals' cls/aff nets).
      input_shape: [H, W, 3]; name: model name.
    Returns:
      keras.Model images [N,H,W,3] -> {endpoint: [N,ceil(ceil(ceil(H/2)/2)/2), ..., C]}.
    """
    return_endpoints = tuple(return_endpoints)
    if not return_endpoints or any(e not in ENDPOINTS for e in return_endpoints):
        raise ValueError(f'return_endpoints must be a non-empty subset of {ENDPOINTS}, got {return_endpoints}')
    widths = vgg16_widths(width_multiplier, widths)

    def conv_relu(x, lname, filters, dilation=1, kernel=3):
        pad = dilation if kernel == 3 else 0
        x = torch_layers.TorchConv2D(filters, kernel, padding=pad, dilation_rate=dilation, original_name=lname,
                                     name=lname)(x)
        return keras.layers.ReLU(name=f'{lname}.relu')(x)

    images = keras.Input(shape=input_shape, name='images')
    x = images
    features = {}
    for block, (depth, width) in enumerate(zip(_BLOCK_DEPTHS, widths[:5]), start=1):
        dilation = 2 if block == 5 else 1
        for i in range(1, depth + 1):
            x = conv_relu(x, f'conv{block}_{i}', width, dilation=dilation)
        if block <= 3:
            x = torch_layers.TorchMaxPool2D(3, 2, 1, name=f'pool{block}')(x)
        elif block == 4:
            features['conv4'] = x
            x = torch_layers.TorchMaxPool2D(3, 1, 1, name='pool4')(x)
        else:
            features['conv5'] = x
    x = conv_relu(x, 'fc6', widths[5], dilation=fc6_dilation)
    x = torch_layers.Dropout2d(0.5, name='drop6')(x)
    features['conv5fc'] = conv_relu(x, 'fc7', widths[5], kernel=1)

    model = keras.Model(images, {e: features[e] for e in return_endpoints}, name=name)
    torch_layers.freeze_layers(model, not_training)
    return model
