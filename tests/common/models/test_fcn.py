"""FCN builder: classifier on the backbone output, names under block5, the original's input-size rule."""
import numpy as np
import pytest
import tensorflow as tf

from common.models.fcn import build_fcn
from common.models.naming import original_names


def test_fcn_is_a_biased_1x1_classifier_on_the_backbone():
    model = build_fcn(3, 48, backbone=dict(filters=(1, 2, 4, 8), num_blocks=(1, 1, 1, 1)))
    variables = original_names(model.variables)
    kernel = variables['resnet_v1_101/block5/fc1_voc12/weights'].numpy()
    bias = variables['resnet_v1_101/block5/fc1_voc12/biases'].numpy()
    assert kernel.shape == (1, 1, 32, 3) and bias.shape == (3,)
    features_model = tf.keras.Model(model.input, model.get_layer('resnet_v1_101.block4.unit_1.bottleneck_v1.relu')
                                    .output)
    x = np.random.default_rng(0).normal(size=(2, 48, 48, 3)).astype(np.float32)
    features = features_model(x).numpy()
    np.testing.assert_allclose(model(x).numpy(), features @ kernel[0, 0] + bias, rtol=1e-5, atol=1e-5)
    assert model.output.shape == (None, 6, 6, 3)


def test_fcn_input_size_rule():
    with pytest.raises(ValueError, match='check_input_size=False'):
        build_fcn(3, 40, backbone=dict(filters=(1, 2, 4, 8), num_blocks=(1, 1, 1, 1)))
    model = build_fcn(3, 40, backbone=dict(filters=(1, 2, 4, 8), num_blocks=(1, 1, 1, 1)), check_input_size=False)
    assert model.output.shape == (None, 5, 5, 3)
