import numpy as np
import pytest

from affinitynet import model as model_lib
from affinitynet.train_cls import parse_color_jitter, parse_resize_long


def test_resize_long_range():
    assert parse_resize_long('256,512') == (256, 512)
    assert parse_resize_long('98,98') == (98, 98)
    for bad in ('256', '512,256', '0,10', 'a,b'):
        with pytest.raises(ValueError, match='--resize_long'):
            parse_resize_long(bad)


def test_bn_decay_needs_resnet38():
    with pytest.raises(ValueError, match='--bn_decay'):
        model_lib.build_classifier('vgg16', 1 / 16, bn_decay=0.9)


def test_color_jitter_flag():
    assert parse_color_jitter('0.3,0.3,0.3,0.1') == (0.3, 0.3, 0.3, 0.1)
    for bad in ('0.3,0.3,0.3', '0.3,0.3,0.3,0.6', '-1,0,0,0', 'a,b,c,d'):
        with pytest.raises(ValueError, match='--color_jitter'):
            parse_color_jitter(bad)


def test_nodropout_zeroes_every_dropout_rate():
    net = model_lib.build_classifier('resnet38', 1 / 16, from_scratch=True, bn_decay=0.9, dropout=False)
    rates = [layer.rate for layer in net.backbone.layers if 'dropout' in layer.name] + [net.dropout7.rate]
    assert len(rates) == 5 and not any(rates)  # b6 and b7 have two each, plus the classifier's dropout7
    default = model_lib.build_classifier('resnet38', 1 / 16)
    assert sorted(layer.rate for layer in default.backbone.layers if 'dropout' in layer.name) == [0.3, 0.3, 0.5, 0.5]
    images = np.random.default_rng(0).normal(size=(2, 24, 24, 3)).astype(np.float32)
    np.testing.assert_array_equal(net(images, training=True), net(images, training=True))  # nothing dropped
    with pytest.raises(ValueError, match='--nodropout'):
        model_lib.build_classifier('vgg16', 1 / 16, dropout=False)
