"""PSA networks on the `common.models` backbones: classification nets (CAMs) and AffinityNet.

- `ClassifierNet` = psa `resnet38_cls` / `vgg16_cls`: dropout -> global average pool -> fc8 (1x1 conv, 20
  classes, no bias, xavier) -> logits; `forward_cam` = ReLU(fc8(features)) (VGG: its square root), stride 8.
- `AffinityNet` = psa `resnet38_aff` / `vgg16_aff`: f8_3 / f8_4 / f8_5 (1x1 convs on three backbone stages, ELU;
  GroupNorm before the ELU for VGG) -> concat (448) -> f9 (1x1) -> ELU -> pair affinities
  (`affinitynet.affinity`). f8_* are kaiming-normal, f9 xavier-uniform with gain 4, as the original.

Every variable carries its PyTorch state-dict key (`common.models.naming.original_name`: 'fc8.weight',
'f9.weight', 'gn8_3.bias', 'b2.conv_branch2a.weight', ...), so the released weights (`res38_cls.pth`,
`res38_aff.pth`, `vgg16_cls.pth`, `vgg16_aff.pth`) and the ImageNet initialisations (`.params`, `.caffemodel`)
load with `load_weights`.
"""
import os

import keras
import numpy as np
import tensorflow as tf

from affinitynet.affinity import affinity_from_features
from common.models import resnet38, torch_layers, vgg16
from common.models.naming import set_original_name

ARCHS = ('resnet38', 'vgg16')


class ScratchInitializer(keras.initializers.Initializer):
    """Half-LeCun normal (variance 0.5 / fan_in, untruncated) with a new seed per layer, drawn from Python's
    `random` (which `keras.utils.set_random_seed` seeds).

    One shared unseeded Keras initializer picks its seed once, when it is made (at import, whatever --seed says),
    and returns the same values for every layer of the same shape: from-scratch weights were neither reproducible
    nor independent between layers.
    """

    def __call__(self, shape, dtype=None):
        import random
        seed = random.randint(0, 2 ** 31 - 1)
        return keras.initializers.VarianceScaling(0.5, 'fan_in', 'untruncated_normal', seed=seed)(shape, dtype)


SCRATCH_INITIALIZER = ScratchInitializer()
NUM_CLASSES = 20
HEAD_WIDTHS = (64, 128, 256)  # f8_3, f8_4, f8_5; f9 = their sum (448)
GN_GROUPS = (8, 16, 32)  # vgg16_aff GroupNorm groups of f8_3, f8_4, f8_5
CLS_SCRATCH = ('fc8',)
AFF_SCRATCH = ('f8_3', 'f8_4', 'f8_5', 'f9')


def _check_arch(arch):
    if arch not in ARCHS:
        raise ValueError(f'--network: unknown architecture {arch!r}; use one of {ARCHS} '
                         f'(or the original module names network.resnet38_cls / vgg16_aff ...)')
    return arch


def arch_of(network):
    """'resnet38' / 'vgg16' from an original `--network` value ('network.resnet38_aff', 'vgg16_cls', ...)."""
    name = network.rsplit('.', 1)[-1]
    for arch in ARCHS:
        if name.startswith(arch):
            return arch
    return _check_arch(name)


def _scratch_initializer(seed):
    if seed is None:
        return SCRATCH_INITIALIZER
    return keras.initializers.VarianceScaling(0.5, 'fan_in', 'untruncated_normal',
                                              seed=keras.random.SeedGenerator(int(seed)))


def build_backbone(arch, kind, width_multiplier=1.0, widths=None, from_scratch=False, bn_decay=None, dropout=True,
                   scratch_seed=None):
    """The backbone of a cls ('cls') or affinity ('aff') net, frozen layers as the originals' `not_training`.

    from_scratch: (ResNet-38 only) half-LeCun-normal conv initialisation and only conv1a frozen
      (psa's resnet38d base), for training without
      ImageNet weights (synthetic data, the quick start): with the frozen BN an identity, PyTorch's default init
      shrinks the signal through the 38 layers to nothing and He init makes it explode.
    bn_decay: (ResNet-38 only) None = the original frozen BN; a float trains BN from batch statistics with this
      moving-average decay (from-scratch training: frozen statistics of mean 0 / variance 1 do not normalise).
    dropout: (ResNet-38 only) False = b6/b7 dropout rates 0 (tiny widths from scratch); True = the original.
    scratch_seed: (from_scratch) None = SCRATCH_INITIALIZER, one seed per layer drawn from Python's `random`
      (reproducible after `keras.utils.set_random_seed`); an int = a Keras seed generator of that seed, one draw
      per layer, independent of the global seeds.

    Returns:
      keras.Model images -> dict of endpoints: ResNet-38 conv4/conv5/conv6, VGG-16 conv4/conv5/conv5fc
      (the cls nets only the last one).
    """
    _check_arch(arch)
    if arch == 'resnet38':
        endpoints = ('conv6',) if kind == 'cls' else ('conv4', 'conv5', 'conv6')
        if from_scratch:
            return resnet38.build_resnet38(width_multiplier, widths, return_endpoints=endpoints,
                                           not_training=resnet38.NOT_TRAINING['psa_base'],
                                           kernel_initializer=_scratch_initializer(scratch_seed), bn_decay=bn_decay,
                                           dropout=dropout)
        return resnet38.build_resnet38(width_multiplier, widths, return_endpoints=endpoints,
                                       not_training=resnet38.NOT_TRAINING['psa_' + kind], bn_decay=bn_decay,
                                       dropout=dropout)
    if bn_decay is not None:
        raise ValueError('--bn_decay: only ResNet-38 has batch norm (VGG-16 has none)')
    if not dropout:
        raise ValueError('--nodropout: only for ResNet-38 (VGG-16 keeps its fc6 dropout)')
    endpoints = ('conv5fc',) if kind == 'cls' else ('conv4', 'conv5', 'conv5fc')
    return vgg16.build_vgg16d(fc6_dilation=1 if kind == 'cls' else 4, width_multiplier=width_multiplier,
                              widths=widths, return_endpoints=endpoints, not_training=vgg16.NOT_TRAINING)


def _last_endpoint(arch):
    return 'conv6' if arch == 'resnet38' else 'conv5fc'


class ClassifierNet(keras.Model):
    """psa resnet38_cls / vgg16_cls.

    Args:
      backbone: keras.Model from `build_backbone(arch, 'cls')`.
      arch: 'resnet38' or 'vgg16' (VGG's CAM is the square root of the ReLU'd class map).
      dropout_rate: rate of dropout7 before the pooling (0.5, the original's).
    """

    def __init__(self, backbone, arch='resnet38', num_classes=NUM_CLASSES, dropout_rate=0.5, **kwargs):
        super().__init__(**kwargs)
        self.arch = _check_arch(arch)
        self.backbone = backbone
        self.dropout7 = torch_layers.Dropout2d(dropout_rate, name='dropout7')
        self.fc8 = torch_layers.TorchConv2D(
            num_classes, 1, use_bias=False, kernel_initializer=torch_layers.torch_xavier_uniform_initializer(1.0),
            original_name='fc8', name='fc8')
        self.fc8.build((None, None, None, int(backbone.output[_last_endpoint(arch)].shape[-1])))

    def features(self, images, training=False):
        out = self.backbone(images, training=training)
        return out[_last_endpoint(self.arch)] if isinstance(out, dict) else out

    def call(self, images, training=False):
        """images [N, H, W, 3] normalised -> logits [N, 20] (GAP and the 1x1 fc8 commute)."""
        x = self.dropout7(self.features(images, training), training=training)
        x = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
        return tf.reshape(self.fc8(x), [-1, self.fc8.filters])

    def forward_cam(self, images):
        """Class activation maps [N, ceil(H/8), ceil(W/8), 20] (no dropout)."""
        cam = tf.nn.relu(self.fc8(self.features(images, False)))
        return tf.sqrt(cam) if self.arch == 'vgg16' else cam


class AffinityNet(keras.Model):
    """psa resnet38_aff / vgg16_aff.

    Args:
      backbone: keras.Model from `build_backbone(arch, 'aff')`, or None for the head alone (`head(d)`).
      arch: 'resnet38' or 'vgg16' (GroupNorm in the head).
      in_channels: channels of the three endpoints the head reads (default: those of `backbone`, else the
        full-width ResNet-38 512 / 1024 / 4096 or VGG-16 512 / 512 / 1024).
      radius: pair radius (5).
    """

    def __init__(self, backbone=None, arch='resnet38', in_channels=None, radius=5, **kwargs):
        super().__init__(**kwargs)
        self.arch = _check_arch(arch)
        self.backbone = backbone
        self.radius = radius
        self.endpoint_names = ('conv4', 'conv5', _last_endpoint(arch))
        if in_channels is None:
            if backbone is not None:
                in_channels = [int(backbone.output[e].shape[-1]) for e in self.endpoint_names]
            else:
                in_channels = (512, 1024, 4096) if arch == 'resnet38' else (512, 512, 1024)
        kaiming = torch_layers.torch_kaiming_normal_initializer()
        self.f8 = []
        self.gn8 = []
        for i, (name, width, cin) in enumerate(zip(AFF_SCRATCH[:3], HEAD_WIDTHS, in_channels)):
            conv = torch_layers.TorchConv2D(width, 1, use_bias=False, kernel_initializer=kaiming,
                                            original_name=name, name=name)
            conv.build((None, None, None, int(cin)))
            self.f8.append(conv)
            if arch == 'vgg16':
                gn_name = 'gn' + name[1:]
                gn = keras.layers.GroupNormalization(GN_GROUPS[i], epsilon=1e-5, name=gn_name)
                gn.build((None, None, None, width))
                set_original_name(gn.gamma, gn_name + '.weight')
                set_original_name(gn.beta, gn_name + '.bias')
                self.gn8.append(gn)
        self.f9 = torch_layers.TorchConv2D(sum(HEAD_WIDTHS), 1, use_bias=False,
                                           kernel_initializer=torch_layers.torch_xavier_uniform_initializer(4.0),
                                           original_name='f9', name='f9')
        self.f9.build((None, None, None, sum(HEAD_WIDTHS)))

    def head(self, d, to_dense=False):
        """(f9 [N, h, w, 448], affinities [N, D, P] or dense [h*w, h*w]) from the backbone endpoints dict."""
        parts = []
        for i, name in enumerate(self.endpoint_names):
            x = self.f8[i](tf.convert_to_tensor(d[name], tf.float32))
            if self.gn8:
                x = self.gn8[i](x)
            parts.append(tf.nn.elu(x))
        f9 = tf.nn.elu(self.f9(tf.concat(parts, axis=-1)))
        return f9, affinity_from_features(f9, self.radius, to_dense=to_dense)

    def call(self, images, to_dense=False, training=False):
        """images [N, H, W, 3] normalised -> affinities [N, D, P] (or dense [h*w, h*w] for one image)."""
        if self.backbone is None:
            raise ValueError('AffinityNet(backbone=None) has only the head; call head(endpoints)')
        return self.head(self.backbone(images, training=training), to_dense=to_dense)[1]


def build_classifier(arch='resnet38', width_multiplier=1.0, widths=None, from_scratch=False, bn_decay=None,
                     dropout=True):
    """A `ClassifierNet` with its backbone (weights initialised, to be loaded; bn_decay see `build_backbone`;
    dropout=False also sets dropout7's rate to 0)."""
    return ClassifierNet(build_backbone(arch, 'cls', width_multiplier, widths, from_scratch, bn_decay, dropout), arch,
                         dropout_rate=0.5 if dropout else 0.0, name=f'{arch}_cls')


def build_affinity_net(arch='resnet38', width_multiplier=1.0, widths=None, radius=5, from_scratch=False,
                       bn_decay=None, dropout=True):
    """An `AffinityNet` with its backbone (bn_decay, dropout see `build_backbone`)."""
    return AffinityNet(build_backbone(arch, 'aff', width_multiplier, widths, from_scratch, bn_decay, dropout), arch,
                       radius=radius,
                       name=f'{arch}_aff')


def read_weights(path):
    """State dict {PyTorch key: array} of a weight file: PyTorch `.pth`, MXNet `.params` (ResNet-38 ImageNet),
    Caffe `.caffemodel` (VGG-16 ImageNet) or the `.npz` this project writes (`save_weights`)."""
    from common.weights import mxnet_convert, torch_convert
    if not os.path.isfile(path):
        raise FileNotFoundError(f'--weights: file not found: {path}')
    if path.endswith('.params'):
        return mxnet_convert.convert_mxnet_to_torch(path)
    if path.endswith('.caffemodel'):
        return torch_convert.convert_caffe_to_torch(path)
    if path.endswith('.npz'):
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    return torch_convert.read_torch_state_dict(path)


def load_weights(model, path, strict=False):
    """Loads a weight file (see `read_weights`) into a model by original names.

    strict=False is the originals' training start (`load_state_dict(strict=False)`: fc8 / the affinity head keep
    their initialisation); strict=True (inference) fails on missing or unexpected keys. A tensor whose shape does
    not fit its variable raises ValueError naming the file, the key and both shapes.
    Returns:
      (restored, missing, unexpected) key lists.
    """
    from common.weights import torch_convert
    state = read_weights(path)
    try:
        return torch_convert.load_torch_state_dict(model, state, strict=strict)
    except ValueError as error:
        raise ValueError(f'--weights {path}: {error}') from error


def save_weights(model, path):
    """Writes the model's variables as `.npz` {PyTorch key: array in PyTorch layout} atomically."""
    import io
    from common.io import atomic_write_bytes
    from common.weights import torch_convert
    buffer = io.BytesIO()
    np.savez(buffer, **torch_convert.export_torch_state_dict(model))
    return atomic_write_bytes(path, buffer.getvalue())
