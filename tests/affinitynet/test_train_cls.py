import pytest

from affinitynet import model as model_lib
from affinitynet.train_cls import parse_resize_long


def test_resize_long_range():
    assert parse_resize_long('256,512') == (256, 512)
    assert parse_resize_long('98,98') == (98, 98)
    for bad in ('256', '512,256', '0,10', 'a,b'):
        with pytest.raises(ValueError, match='--resize_long'):
            parse_resize_long(bad)


def test_bn_decay_needs_resnet38():
    with pytest.raises(ValueError, match='--bn_decay'):
        model_lib.build_classifier('vgg16', 1 / 16, bn_decay=0.9)
