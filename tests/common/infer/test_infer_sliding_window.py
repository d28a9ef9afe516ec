"""Sliding-window inference (spec 5.1) against the original `inference.py` run with a stub model."""
import numpy as np
import pytest
import tensorflow as tf

from common.infer import IMG_MEAN
from common.infer.sliding_window import (pad_to_window, sliding_window_predict, sliding_window_scores,
                                         upsampled_outputs, window_boxes, window_ends)


def make_stub(weights, biases):
    """The golden cases' stub network: 1x1 conv + bias, then 8x8/8 VALID average pooling."""
    weights, biases = tf.constant(weights), tf.constant(biases)

    def stub(images):
        return tf.nn.avg_pool2d(tf.nn.conv2d(tf.cast(images, tf.float32), weights, 1, 'VALID') + biases, 8, 8,
                                'VALID')
    return stub


def test_window_ends_match_the_original_for_every_combo(golden, assert_golden):
    ins, outs, case = golden('aaf_sliding_window_inference')
    for combo in case['scalars']['combos']:
        i = combo['index']
        (height, width), (in_h, in_w), (s_h, s_w) = combo['image_hw'], combo['input_size'], combo['strides']
        padded_h, padded_w = max(height, in_h), max(width, in_w)
        assert_golden(window_ends(padded_h, in_h, s_h), outs[f'ends_h_{i}'], case['tolerance'][f'out_ends_h_{i}'])
        assert_golden(window_ends(padded_w, in_w, s_w), outs[f'ends_w_{i}'], case['tolerance'][f'out_ends_w_{i}'])
        assert window_ends(padded_h, in_h, s_h).dtype == np.int32


def test_spec_window_end_examples():
    assert window_ends(480, 480, 320).tolist() == [480]              # VOC 375 rows, padded to 480
    assert window_ends(500, 480, 320).tolist() == [480, 500]
    assert window_ends(1024, 720, 480).tolist() == [720, 1024]       # Cityscapes
    assert window_ends(2048, 720, 480).tolist() == [720, 1162, 1605, 2048]


def test_window_ends_reject_a_canvas_smaller_than_the_window():
    with pytest.raises(ValueError, match='smaller than the window'):
        window_ends(20, 24, 16)


@pytest.mark.parametrize('index', [3, 4])
@pytest.mark.parametrize('batch_windows', [True, False])
def test_predictions_match_the_original(golden, assert_golden, index, batch_windows):
    ins, outs, case = golden('aaf_sliding_window_inference')
    combo = case['scalars']['combos'][index]
    image = ins[f'image_{index}'].astype(np.float32) - np.asarray(case['scalars']['img_mean_rgb'], np.float32)
    prediction = sliding_window_predict(image, make_stub(ins['stub_weights'], ins['stub_biases']),
                                        combo['input_size'], combo['strides'], case['scalars']['num_classes'],
                                        ignore_label=case['scalars']['ignore_label'], batch_windows=batch_windows)
    assert prediction.dtype == np.uint8
    assert_golden(prediction, outs[f'pred_{index}'], case['tolerance'][f'out_pred_{index}'])


def test_scores_are_ignore_label_plus_the_sum_of_softmax_windows(golden):
    """Independent NumPy reference of the accumulation (no TF softmax), and the init-with-zero flag."""
    ins, _, case = golden('aaf_sliding_window_inference')
    image = ins['image_4'].astype(np.float32) - np.float32(IMG_MEAN)
    stub = make_stub(ins['stub_weights'], ins['stub_biases'])
    faithful = sliding_window_scores(image, stub, (24, 24), (16, 16), 5)
    clean = sliding_window_scores(image, stub, (24, 24), (16, 16), 5, init_with_zero=True)

    padded = pad_to_window(image, (24, 24))
    reference = np.zeros(padded.shape[:2] + (5,))
    for sh, eh, sw, ew in window_boxes(padded.shape[:2], (24, 24), (16, 16)):
        logits = tf.compat.v1.image.resize_bilinear(stub(padded[np.newaxis, sh:eh, sw:ew]), (24, 24)).numpy()[0]
        exp = np.exp(logits - logits.max(-1, keepdims=True))
        reference[sh:eh, sw:ew] += exp / exp.sum(-1, keepdims=True)
    np.testing.assert_allclose(clean, reference[:20, :45], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(faithful - 255.0, reference[:20, :45], atol=1e-4)
    assert faithful.shape == (20, 45, 5)


def test_window_fn_hook_stitches_raw_outputs():
    """SegSort's hook: raw upsampled outputs summed, so a constant output counts the windows per pixel."""
    def ones(images):
        return tf.ones([tf.shape(images)[0], 3, 4, 2])
    image = np.zeros((30, 50, 3), np.float32)
    stitched = sliding_window_scores(image, ones, (24, 32), (10, 10), 2, init_with_zero=True,
                                     window_fn=upsampled_outputs, max_windows_per_call=2)
    expected = np.zeros((30, 50))
    for eh in window_ends(30, 24, 10):
        for ew in window_ends(50, 32, 10):
            expected[eh - 24:eh, ew - 32:ew] += 1
    np.testing.assert_array_equal(stitched[..., 0], expected)
    np.testing.assert_array_equal(stitched[..., 1], expected)
    averaged = sliding_window_scores(image, ones, (24, 32), (10, 10), 2, init_with_zero=True,
                                     window_fn=upsampled_outputs, average=True)
    np.testing.assert_allclose(averaged, 1.0)


def test_channel_mismatch_is_reported():
    def three_channels(images):
        return tf.zeros([tf.shape(images)[0], 3, 3, 3])
    with pytest.raises(ValueError, match='num_classes=5'):
        sliding_window_predict(np.zeros((24, 24, 3), np.float32), three_channels, (24, 24), (24, 24), 5)
