"""Tests of `common.models.factory`: flag parsing, the input-size rule, and that training and inference builds of
every model share their original variable names (so checkpoints move between the CLIs)."""
import numpy as np
import pytest
from absl import flags

from common.cli import normalize_flag_names
from common.models import factory
from common.models.naming import original_name

BACKBONE = {'filters': (4, 8, 8, 16), 'num_blocks': (1, 1, 1, 1)}


def test_parse_int_list():
    assert factory.parse_int_list('336,336', 'input_size', 2) == [336, 336]
    assert factory.parse_int_list(' 4, 8 ,8,16', 'backbone_filters') == [4, 8, 8, 16]
    with pytest.raises(ValueError, match='--input_size: expected comma-separated integers'):
        factory.parse_int_list('336x336', 'input_size', 2)
    with pytest.raises(ValueError, match="--strides: expected 2 comma-separated integers, got '320'"):
        factory.parse_int_list('320', 'strides', 2)


@pytest.mark.parametrize('model_name, size', [('pspnet', (50, 50)), ('pspnet', (48, 96)), ('fcn', (40, 40))])
def test_check_input_size_rejects_with_flag_name(model_name, size):
    with pytest.raises(ValueError, match=f'--input-size {size[0]},{size[1]}: --model {model_name} needs a square'):
        factory.check_input_size(model_name, size)


def test_check_input_size_accepts():
    factory.check_input_size('pspnet', (336, 336))
    factory.check_input_size('fcn', (48, 48))
    factory.check_input_size('deeplab', (41, 57))  # DeepLab takes any size
    with pytest.raises(ValueError, match='--input-size: sizes must be positive'):
        factory.check_input_size('deeplab', (0, 10))


def test_unknown_model():
    with pytest.raises(ValueError, match="--model must be one of .*got 'unet'"):
        factory.build_segmentation_model('unet', 5, (48, 48))


@pytest.mark.parametrize('model_name, size, out_hw', [('pspnet', (48, 48), (6, 6)), ('deeplab', (40, 57), (5, 8)),
                                                      ('fcn', (48, 48), (6, 6))])
def test_train_and_inference_builds_share_names(model_name, size, out_hw):
    train_model = factory.build_segmentation_model(model_name, 5, size, backbone=BACKBONE, psp_channels=8,
                                                   training=True)
    infer_model = factory.build_segmentation_model(model_name, 5, size, backbone=BACKBONE, psp_channels=8)
    images = np.zeros((2,) + size + (3,), np.float32)
    assert tuple(train_model(images, training=False).shape) == (2,) + out_hw + (5,)
    assert tuple(infer_model(images).shape) == (2,) + out_hw + (5,)
    train_shapes = {original_name(v): tuple(v.shape) for v in train_model.variables}
    infer_shapes = {original_name(v): tuple(v.shape) for v in infer_model.variables}
    assert train_shapes == infer_shapes
    # training=True: trainable convolutions and BN beta/gamma; the default inference graph freezes everything.
    trainable = {original_name(v) for v in train_model.trainable_variables}
    assert any(n.endswith('/weights') for n in trainable) and any(n.endswith('/gamma') for n in trainable)
    assert not any('moving_' in n for n in trainable)
    assert not infer_model.trainable_variables


def parse_model_flags(argv):
    flag_values = flags.FlagValues()
    factory.define_model_flags(flag_values)
    flag_values(normalize_flag_names(['prog'] + list(argv)))
    return flag_values


def test_model_flags_defaults_are_resnet101_pspnet():
    flag_values = parse_model_flags([])
    assert flag_values.model == 'pspnet' and flag_values.psp_channels == 512
    assert factory.backbone_from_flags(flag_values) == {'filters': (64, 128, 256, 512), 'num_blocks': (3, 4, 23, 3),
                                                        'bn_decay': 0.9997}


def test_model_from_flags_uses_the_reduced_widths():
    flag_values = parse_model_flags(['--backbone-filters=4,8,8,16', '--backbone-blocks=1,1,1,1', '--psp-channels=8'])
    model = factory.model_from_flags(flag_values, 3, (48, 48), training=True)
    shapes = {original_name(v): tuple(v.shape) for v in model.variables}
    # bottleneck output = 4 x filters[-1]; PSP branches have psp_channels outputs.
    assert shapes['resnet_v1_101/block5/pool1/conv1/weights'] == (1, 1, 64, 8)
    assert sum(1 for n in shapes if '/block4/' in n and n.endswith('/weights')) == 4  # one unit + shortcut
    with pytest.raises(ValueError, match='--input-size 40,40'):
        factory.model_from_flags(flag_values, 3, (40, 40))


def test_model_from_flags_bad_backbone_flag():
    flag_values = parse_model_flags(['--backbone-filters=4,8,8'])
    with pytest.raises(ValueError, match="--backbone_filters: expected 4 comma-separated integers, got '4,8,8'"):
        factory.model_from_flags(flag_values, 3, (48, 48))


def test_bn_decay_flag_reaches_the_backbone_but_not_the_head():
    from common.models.layers import BatchNormTF1
    flag_values = parse_model_flags(['--backbone-filters=4,4,4,4', '--backbone-blocks=1,1,1,1', '--psp-channels=4',
                                     '--bn-decay=0.9'])
    model = factory.model_from_flags(flag_values, 3, (48, 48), training=True)
    decays = {layer.name: layer.decay for layer in model.layers if isinstance(layer, BatchNormTF1)}
    assert {d for name, d in decays.items() if '.block5.' not in name} == {0.9}
    assert {d for name, d in decays.items() if '.block5.' in name} == {0.99}


@pytest.mark.parametrize('initializer', ['glorot_uniform', 'msra_uniform'])
def test_kernel_initializer_flag(initializer):
    """msra_uniform (the originals' multi-GPU layers) draws from U(+-sqrt(6/fan_in)), glorot from
    U(+-sqrt(6/(fan_in+fan_out))); on a kernel with fan_in = fan_out the two bounds differ by sqrt(2)."""

    def model_variable(model, name):
        return next(v for v in model.variables if original_name(v) == name)

    flag_values = parse_model_flags(['--backbone-filters=16,4,4,4', '--backbone-blocks=1,1,1,1', '--psp-channels=8',
                                     f'--kernel-initializer={initializer}'])
    model = factory.model_from_flags(flag_values, 3, (48, 48), training=True)
    # block1's 3x3 conv: fan_in = fan_out, not atrous (atrous kernels stay glorot_uniform in both originals).
    kernel = model_variable(model, 'resnet_v1_101/block1/unit_1/bottleneck_v1/conv2/weights').numpy()
    receptive = int(np.prod(kernel.shape[:-2]))
    fan_in, fan_out = receptive * kernel.shape[-2], receptive * kernel.shape[-1]
    bounds = {'msra_uniform': np.sqrt(6.0 / fan_in), 'glorot_uniform': np.sqrt(6.0 / (fan_in + fan_out))}
    bound, other = bounds[initializer], bounds[({*bounds} - {initializer}).pop()]
    assert abs(bound - other) > 0.2 * bound and kernel.size > 500
    assert 0.95 * bound < np.abs(kernel).max() <= bound
