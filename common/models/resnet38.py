"""ResNet-38 "38d" (wide ResNet, ademxapp model A1) as used by PSA, SEAM and A2GNN (psa_a2gnn.md 5.1).

Pre-activation residual units, bias-free convolutions, frozen BN (eps 1e-5), output stride 8 (b5..b7 dilated).
Channels last; input is ImageNet-normalized RGB [N,H,W,3]. Every variable records its PyTorch state-dict key
(`common.models.naming.original_name`), e.g. 'conv1a.weight', 'b5_1.conv_branch2b1.weight',
'b6.bn_branch2b2.running_var', 'bn7.bias', so `common.weights.torch_convert.load_torch_state_dict` and the
parameter-group rules work on names only.

The architecture lives in one table (`resnet38_units`); the builder and the weight-count helpers both read it.
"""

import collections

import keras

from common.models import torch_layers

# Channel widths of the full model: conv1a, stage 2, 3, 4 outputs, b5 out, b6 out, b7 out.
RESNET38_WIDTHS = (64, 128, 256, 512, 1024, 2048, 4096)
# Conv weight count of the full model (psa_a2gnn.md 5.1).
RESNET38_NUM_CONV_WEIGHTS = 105_023_168

# Endpoint name -> the unit whose BN-ReLU'd input it is ('conv6' is relu(bn7(b7 output))).
ENDPOINT_UNITS = {'conv1': 'b2', 'conv2': 'b3', 'conv3': 'b4', 'conv4': 'b5', 'conv5': 'b6'}
ENDPOINTS = ('conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'conv6')

# Layers the originals freeze with requires_grad=False (besides BN, always frozen); a prefix selects a whole unit.
NOT_TRAINING = {
    'psa_base': ('conv1a',),
    'psa_cls': ('conv1a', 'b2', 'b2_1', 'b2_2'),
    'psa_aff': ('conv1a', 'b2', 'b2_1', 'b2_2'),
    'a2g_aff_gated': ('conv1a', 'b2', 'b2_1', 'b2_2'),
    'seam': ('conv1a', 'b2', 'b2_1', 'b2_2'),
    'a2g_base': (),
    'a2g_cls': (),
}

Unit = collections.namedtuple(
    'Unit', 'name kind in_channels mid_channels out_channels stride first_dilation dilation dropout')
Unit.__doc__ = """One residual unit. kind 'basic' = ResBlock (two 3x3 convs), 'bottleneck' = ResBlock_bot
(1x1 -> 3x3 -> 1x1, mid widths out/4 and out/2). first_dilation applies to conv_branch2a of basic units."""


def resnet38_widths(width_multiplier=1.0, widths=None):
    """The 7 channel widths (conv1a, b2.., b3.., b4.., b5.., b6, b7), scaled and rounded to multiples of 4.

    Args:
      width_multiplier: scale of RESNET38_WIDTHS (1.0 = the original).
      widths: explicit 7 widths (overrides width_multiplier); b6/b7 widths must be divisible by 4.
    """
    if widths is None:
        widths = tuple(max(4, int(round(w * width_multiplier / 4.0)) * 4) for w in RESNET38_WIDTHS)
    widths = tuple(int(w) for w in widths)
    if len(widths) != 7:
        raise ValueError(f'widths must have 7 entries (conv1a, stage2..4, b5, b6, b7), got {widths}')
    if widths[5] % 4 or widths[6] % 4:
        raise ValueError(f'bottleneck widths (b6, b7) must be divisible by 4, got {widths[5]}, {widths[6]}')
    return widths


def resnet38_units(width_multiplier=1.0, widths=None):
    """The unit table of ResNet-38 (original: psa network/resnet38d.py Net.__init__).

    Returns:
      (conv1a_channels, [Unit, ...]) in forward order.
    """
    w1, w2, w3, w4, w5, w6, w7 = resnet38_widths(width_multiplier, widths)
    units = []

    def basic(name, cin, mid, cout, stride=1, first_dilation=None, dilation=1):
        units.append(Unit(name, 'basic', cin, mid, cout, stride,
                          dilation if first_dilation is None else first_dilation, dilation, 0.0))

    basic('b2', w1, w2, w2, stride=2)
    basic('b2_1', w2, w2, w2)
    basic('b2_2', w2, w2, w2)
    basic('b3', w2, w3, w3, stride=2)
    basic('b3_1', w3, w3, w3)
    basic('b3_2', w3, w3, w3)
    basic('b4', w3, w4, w4, stride=2)
    for i in range(1, 6):
        basic(f'b4_{i}', w4, w4, w4)
    basic('b5', w4, w4, w5, stride=1, first_dilation=1, dilation=2)
    basic('b5_1', w5, w4, w5, dilation=2)
    basic('b5_2', w5, w4, w5, dilation=2)
    units.append(Unit('b6', 'bottleneck', w5, (w6 // 4, w6 // 2), w6, 1, 4, 4, 0.3))
    units.append(Unit('b7', 'bottleneck', w6, (w7 // 4, w7 // 2), w7, 1, 4, 4, 0.5))
    return w1, units


def _has_shortcut_conv(unit):
    return unit.kind == 'bottleneck' or unit.in_channels != unit.out_channels or unit.stride != 1


def resnet38_weight_shapes(width_multiplier=1.0, widths=None):
    """PyTorch state-dict keys -> PyTorch shapes (OIHW convs, [C] BN tensors) of the backbone, in module order.

    BN 'num_batches_tracked' buffers are not listed (newer PyTorch adds them; loaders ignore them).
    """
    conv1a, units = resnet38_units(width_multiplier, widths)
    shapes = collections.OrderedDict()
    shapes['conv1a.weight'] = (conv1a, 3, 3, 3)

    def bn(prefix, channels):
        for suffix in ('weight', 'bias', 'running_mean', 'running_var'):
            shapes[f'{prefix}.{suffix}'] = (channels,)

    for u in units:
        if u.kind == 'basic':
            bn(f'{u.name}.bn_branch2a', u.in_channels)
            shapes[f'{u.name}.conv_branch2a.weight'] = (u.mid_channels, u.in_channels, 3, 3)
            bn(f'{u.name}.bn_branch2b1', u.mid_channels)
            shapes[f'{u.name}.conv_branch2b1.weight'] = (u.out_channels, u.mid_channels, 3, 3)
        else:
            mid_a, mid_b = u.mid_channels
            bn(f'{u.name}.bn_branch2a', u.in_channels)
            shapes[f'{u.name}.conv_branch2a.weight'] = (mid_a, u.in_channels, 1, 1)
            bn(f'{u.name}.bn_branch2b1', mid_a)
            shapes[f'{u.name}.conv_branch2b1.weight'] = (mid_b, mid_a, 3, 3)
            bn(f'{u.name}.bn_branch2b2', mid_b)
            shapes[f'{u.name}.conv_branch2b2.weight'] = (u.out_channels, mid_b, 1, 1)
        if _has_shortcut_conv(u):
            shapes[f'{u.name}.conv_branch1.weight'] = (u.out_channels, u.in_channels, 1, 1)
    bn('bn7', units[-1].out_channels)
    return shapes


def _numel(shape):
    n = 1
    for d in shape:
        n *= int(d)
    return n


def resnet38_num_conv_weights(width_multiplier=1.0, widths=None):
    """Number of conv weights of the backbone (105,023,168 at full width)."""
    return sum(_numel(s) for k, s in resnet38_weight_shapes(width_multiplier, widths).items() if len(s) == 4)


def resnet38_num_bn_affine(width_multiplier=1.0, widths=None):
    """Number of BN weight+bias entries of the backbone (47,744 at full width)."""
    return sum(_numel(s) for k, s in resnet38_weight_shapes(width_multiplier, widths).items()
               if len(s) == 1 and (k.endswith('.weight') or k.endswith('.bias')))


def _conv(filters, kernel, original_name, strides=1, padding=0, dilation=1, initializer=None):
    return torch_layers.TorchConv2D(filters, kernel, strides=strides, padding=padding, dilation_rate=dilation,
                                    use_bias=False, kernel_initializer=initializer, original_name=original_name,
                                    name=original_name)


def _bn_layer(original_name, bn_decay=None):
    if bn_decay is None:
        return torch_layers.FrozenBatchNorm(original_name=original_name, name=original_name)
    return torch_layers.TrainableBatchNorm(bn_decay, original_name=original_name, name=original_name)


def _relu(name):
    return keras.layers.ReLU(name=name)


def _unit_forward(x, u, kernel_initializer, bn_decay=None, dropout=True):
    """Applies one residual unit; returns (output, x_bn_relu). dropout=False sets the unit's dropout rate to 0."""
    p = u.name
    rate = u.dropout if dropout else 0.0

    def _bn(original_name):
        return _bn_layer(original_name, bn_decay)

    x_bn_relu = _relu(f'{p}.relu_branch2a')(_bn(f'{p}.bn_branch2a')(x))
    if _has_shortcut_conv(u):
        shortcut = _conv(u.out_channels, 1, f'{p}.conv_branch1', strides=u.stride,
                         initializer=kernel_initializer)(x_bn_relu)
    else:
        shortcut = x  # the raw input, not the BN-ReLU'd one
    if u.kind == 'basic':
        y = _conv(u.mid_channels, 3, f'{p}.conv_branch2a', strides=u.stride, padding=u.first_dilation,
                  dilation=u.first_dilation, initializer=kernel_initializer)(x_bn_relu)
        y = _relu(f'{p}.relu_branch2b1')(_bn(f'{p}.bn_branch2b1')(y))
        y = _conv(u.out_channels, 3, f'{p}.conv_branch2b1', padding=u.dilation, dilation=u.dilation,
                  initializer=kernel_initializer)(y)
    else:
        mid_a, mid_b = u.mid_channels
        y = _conv(mid_a, 1, f'{p}.conv_branch2a', strides=u.stride, initializer=kernel_initializer)(x_bn_relu)
        y = _relu(f'{p}.relu_branch2b1')(_bn(f'{p}.bn_branch2b1')(y))
        y = torch_layers.Dropout2d(rate, name=f'{p}.dropout_2b1')(y)
        y = _conv(mid_b, 3, f'{p}.conv_branch2b1', padding=u.dilation, dilation=u.dilation,
                  initializer=kernel_initializer)(y)
        y = _relu(f'{p}.relu_branch2b2')(_bn(f'{p}.bn_branch2b2')(y))
        y = torch_layers.Dropout2d(rate, name=f'{p}.dropout_2b2')(y)
        y = _conv(u.out_channels, 1, f'{p}.conv_branch2b2', initializer=kernel_initializer)(y)
    out = keras.layers.Add(name=f'{p}.add')([shortcut, y])
    return out, x_bn_relu


def build_resnet38(width_multiplier=1.0, widths=None, return_endpoints=('conv4', 'conv5', 'conv6'),
                   not_training=(), kernel_initializer=None, input_shape=(None, None, 3), name='resnet38',
                   bn_decay=None, dropout=True):
    """Builds ResNet-38 "38d" (psa network/resnet38d.py `Net.forward_as_dict`) as a dict-output keras.Model.

    Args:
      width_multiplier: channel scale of every layer (1.0 = original, 105,023,168 conv weights); tests use small
        values, the structure (units, strides, dilations, dropouts, names) is unchanged.
      widths: explicit 7 widths (conv1a, stage 2, 3, 4, b5, b6, b7); overrides width_multiplier.
      return_endpoints: subset of ('conv1'..'conv6'): conv1/2/3/4/5 are the BN-ReLU'd inputs of b2/b3/b4/b5/b6
        (64/128/256/512/1024 ch at full width; strides 1/2/4/8/8), conv6 = relu(bn7(b7)) (4096 ch, stride 8).
      not_training: layer-name prefixes to freeze like the originals' `not_training` lists (e.g.
        NOT_TRAINING['psa_aff'] = conv1a, b2, b2_1, b2_2; see torch_layers.freeze_layers). BN is always frozen.
      kernel_initializer: conv kernel initializer (default: PyTorch's Conv2d default); weights are normally loaded.
      input_shape: [H, W, 3] (None for dynamic sizes).
      name: model name.
      bn_decay: None (the original) = frozen BN on its stored statistics; a float = BN trained from batch
        statistics with this moving-average decay (`torch_layers.TrainableBatchNorm`), for training from scratch.
      dropout: False sets the b6/b7 dropout rates to 0 (tiny widths trained from scratch: dropping whole channels
        of a few-dozen-channel layer drowns the signal); True = the original.
    Returns:
      keras.Model: images [N,H,W,3] -> {endpoint: [N,h,w,C]}. Output size at stride 8 is ceil(H/8).
      Dropouts (b6: 0.3, b7: 0.5, channel-wise) are active when called with training=True.
    """
    return_endpoints = tuple(return_endpoints)
    unknown = [e for e in return_endpoints if e not in ENDPOINTS]
    if unknown or not return_endpoints:
        raise ValueError(f'return_endpoints must be a non-empty subset of {ENDPOINTS}, got {return_endpoints}')
    conv1a_channels, units = resnet38_units(width_multiplier, widths)

    images = keras.Input(shape=input_shape, name='images')
    x = _conv(conv1a_channels, 3, 'conv1a', padding=1, initializer=kernel_initializer)(images)
    features = {}
    unit_to_endpoint = {v: k for k, v in ENDPOINT_UNITS.items()}
    for u in units:
        x, x_bn_relu = _unit_forward(x, u, kernel_initializer, bn_decay, dropout)
        if u.name in unit_to_endpoint:
            features[unit_to_endpoint[u.name]] = x_bn_relu
    features['conv6'] = _relu('conv6')(_bn_layer('bn7', bn_decay)(x))

    model = keras.Model(images, {e: features[e] for e in return_endpoints}, name=name)
    torch_layers.freeze_layers(model, not_training)
    return model

