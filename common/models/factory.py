"""One place that turns a model name + sizes (or the matching CLI flags) into a segmentation keras.Model.

Training CLIs, inference CLIs and the SavedModel exporter all build models through here, so a checkpoint written
by one is read by the others under the same original variable names.
"""
MODEL_NAMES = ('pspnet', 'deeplab', 'fcn')


def parse_int_list(text, flag, length=None):
    """'336,336' -> [336, 336] with an error that names the flag."""
    try:
        values = [int(v) for v in str(text).split(',') if v.strip()]
    except ValueError:
        raise ValueError(f'--{flag}: expected comma-separated integers, got {text!r}') from None
    if length is not None and len(values) != length:
        raise ValueError(f'--{flag}: expected {length} comma-separated integers, got {text!r}')
    return values


def check_input_size(model_name, input_size, flag='input_size'):
    """Raises a ValueError naming `--<flag>` when `input_size` does not fit `model_name`.

    PSPNet and FCN take their pyramid-pool kernels from the static size side/8, so (as the originals assert) the
    input must be square with a side divisible by 48; DeepLab takes any size.

    Args:
      model_name: one of MODEL_NAMES.
      input_size: (H, W).
      flag: flag name used in the message (written with hyphens, as the AAF command lines spell it).
    """
    flag = flag.replace('_', '-')
    height, width = (int(v) for v in input_size)
    if height < 1 or width < 1:
        raise ValueError(f'--{flag}: sizes must be positive, got {height},{width}')
    if model_name in ('pspnet', 'fcn') and (height != width or height % 48):
        raise ValueError(f'--{flag} {height},{width}: --model {model_name} needs a square input whose side is a '
                         f'multiple of 48 (e.g. 336,336 or 480,480)')


def build_segmentation_model(model_name, num_classes, input_size, backbone=None, psp_channels=512, training=False,
                             use_global_status=None, synchronized=False, kernel_initializer='glorot_uniform'):
    """Builds 'pspnet', 'deeplab' or 'fcn' on ResNet-v1.

    Args:
      model_name: one of MODEL_NAMES.
      num_classes: output channels.
      input_size: (H, W) the model is built for (PSPNet/FCN need square sides divisible by 48).
      backbone: dict of `build_resnet_v1` kwargs (None = ResNet-101).
      psp_channels: PSPNet pyramid/head width.
      training: True = trainable convolutions (the originals' --is-training); False = an inference graph.
      use_global_status: BN uses moving statistics with frozen beta/gamma; default `not training`, as the
        originals' inference graphs.
      synchronized: cross-replica BN moments (multi-replica training).
      kernel_initializer: 'glorot_uniform' (the single-GPU originals' tf.get_variable default) or 'msra_uniform'
        (the originals' multi-GPU layers) for convolutions a checkpoint does not restore.
    Returns:
      keras.Model images [N, H, W, 3] -> logits [N, H/8, W/8, num_classes].
    """
    if use_global_status is None:
        use_global_status = not training
    common = dict(backbone=backbone, use_global_status=use_global_status, is_training=training,
                  synchronized=synchronized, kernel_initializer=kernel_initializer)
    if model_name == 'pspnet':
        from common.models.pspnet import build_pspnet
        return build_pspnet(num_classes, list(input_size), psp_channels=psp_channels, **common)
    if model_name == 'deeplab':
        from common.models.deeplab import build_deeplab
        return build_deeplab(num_classes, **common)
    if model_name == 'fcn':
        from common.models.fcn import build_fcn
        return build_fcn(num_classes, list(input_size), **common)
    raise ValueError(f'--model must be one of {MODEL_NAMES}, got {model_name!r}')


def define_model_flags(flag_values=None):
    """Defines --model, --backbone_filters, --backbone_blocks, --psp_channels, --bn_decay (ResNet-101 PSPNet
    defaults)."""
    from absl import flags
    # `or` would be wrong: an empty FlagValues is falsy.
    fv = flags.FLAGS if flag_values is None else flag_values
    flags.DEFINE_enum('model', 'pspnet', list(MODEL_NAMES), 'Segmentation network.', flag_values=fv)
    flags.DEFINE_string('backbone_filters', '64,128,256,512', 'ResNet-v1 bottleneck widths of blocks 1-4 '
                        '(reduced values give a small network of the same builder).', flag_values=fv)
    flags.DEFINE_string('backbone_blocks', '3,4,23,3', 'ResNet-v1 units per block (3,4,23,3 = ResNet-101).',
                        flag_values=fv)
    flags.DEFINE_integer('psp_channels', 512, 'Channels of the PSP pyramid branches and head conv.',
                         flag_values=fv)
    flags.DEFINE_float('bn_decay', 0.9997, 'Moving-average decay of the backbone batch norm (0.9997 as the '
                       'original, whose statistics start from ImageNet; use e.g. 0.99 to train from scratch in a '
                       'few hundred steps).', flag_values=fv)
    flags.DEFINE_enum('kernel_initializer', 'glorot_uniform', ['glorot_uniform', 'msra_uniform'],
                      'Initialiser of convolution kernels not restored from a checkpoint: glorot_uniform as the '
                      'single-GPU originals, msra_uniform as their multi-GPU (_mgpu) layers.', flag_values=fv)


def backbone_from_flags(flag_values):
    """The `backbone` dict described by the flags of `define_model_flags`."""
    return {'filters': tuple(parse_int_list(flag_values.backbone_filters, 'backbone_filters', 4)),
            'num_blocks': tuple(parse_int_list(flag_values.backbone_blocks, 'backbone_blocks', 4)),
            'bn_decay': flag_values.bn_decay}


def model_from_flags(flag_values, num_classes, input_size, **kwargs):
    """`build_segmentation_model` from the flags of `define_model_flags`; a bad `input_size` names --input-size."""
    check_input_size(flag_values.model, input_size)
    return build_segmentation_model(flag_values.model, num_classes, input_size,
                                    backbone=backbone_from_flags(flag_values),
                                    psp_channels=flag_values.psp_channels,
                                    kernel_initializer=getattr(flag_values, 'kernel_initializer', 'glorot_uniform'),
                                    **kwargs)
