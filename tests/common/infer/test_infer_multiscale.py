"""Multi-scale + flip inference (spec 5.2) against the original `inference_msc.py` run with a stub model."""
import numpy as np
import pytest

from common.infer.multiscale import (MSC_SCALES, multiscale_passes, multiscale_predict, multiscale_scores,
                                     scaled_size)
from common.infer.sliding_window import sliding_window_scores
from test_infer_sliding_window import make_stub  # the golden cases' stub network


@pytest.mark.parametrize('index', [0, 1])
def test_fused_scores_and_predictions_match_the_original(golden, assert_golden, index):
    ins, outs, case = golden('aaf_msc_flip_inference')
    s = case['scalars']
    tol = case['tolerance']
    image = ins[f'image_{index}'].astype(np.float32) - np.asarray(s['img_mean_rgb'], np.float32)
    stub = make_stub(ins['stub_weights'], ins['stub_biases'])

    sizes = [scaled_size(*image.shape[:2], scale) for scale in s['scales']] * 2
    assert_golden(np.asarray(sizes, np.int32), outs[f'scaled_hw_{index}'], tol[f'out_scaled_hw_{index}'])

    fused, passes = multiscale_scores(image, stub, s['input_size'], s['strides'], s['num_classes'],
                                      ignore_label=s['ignore_label'], flip_aug=s['flip_aug'],
                                      scale_aug=s['scale_aug'], return_passes=True)
    assert fused.dtype == np.float64
    assert_golden(fused, outs[f'fused_scores_{index}'], tol[f'out_fused_scores_{index}'])
    if index == 0:  # the per-pass debug maps were recorded for image 0
        assert len(passes) == 12
        for p, pass_map in enumerate(passes):
            assert_golden(pass_map, outs[f'debug_pass_{p}'], tol[f'out_debug_pass_{p}'])

    prediction = multiscale_predict(image, stub, s['input_size'], s['strides'], s['num_classes'],
                                    flip_aug=True, scale_aug=True)
    assert prediction.dtype == np.uint8
    assert_golden(prediction, outs[f'pred_{index}'], tol[f'out_pred_{index}'])


def test_passes_order_sizes_and_flips():
    image = np.random.default_rng(0).normal(size=(10, 13, 3)).astype(np.float32)
    passes, flipped, reference = multiscale_passes(image, flip_aug=True, scale_aug=True)
    assert flipped == [False] * 6 + [True] * 6
    assert reference == 2
    assert [p.shape[:2] for p in passes[:6]] == [scaled_size(10, 13, s) for s in MSC_SCALES]
    np.testing.assert_array_equal(passes[2], image)  # legacy bilinear at the same size is the identity
    for unflipped, flipped_pass in zip(passes[:6], passes[6:]):
        np.testing.assert_array_equal(flipped_pass, unflipped[:, ::-1])
    passes, flipped, reference = multiscale_passes(image)
    assert len(passes) == 1 and flipped == [False] and reference == 0


def test_single_pass_equals_the_count_averaged_sliding_window(golden):
    ins, _, _ = golden('aaf_msc_flip_inference')
    image = ins['image_1'].astype(np.float32) - 120.0
    stub = make_stub(ins['stub_weights'], ins['stub_biases'])
    fused = multiscale_scores(image, stub, (24, 24), (16, 16), 4)
    averaged = sliding_window_scores(image, stub, (24, 24), (16, 16), 4, average=True)
    np.testing.assert_array_equal(fused, averaged.astype(np.float64))


def test_flip_pass_is_unflipped_before_adding(golden):
    ins, _, _ = golden('aaf_msc_flip_inference')
    image = ins['image_0'].astype(np.float32) - 120.0
    stub = make_stub(ins['stub_weights'], ins['stub_biases'])
    both = multiscale_scores(image, stub, (24, 24), (16, 16), 4, init_with_zero=True, flip_aug=True)
    plain = sliding_window_scores(image, stub, (24, 24), (16, 16), 4, init_with_zero=True, average=True)
    mirrored = sliding_window_scores(image[:, ::-1], stub, (24, 24), (16, 16), 4, init_with_zero=True,
                                     average=True)
    assert not np.allclose(mirrored[:, ::-1], plain, atol=1e-3)  # the flip pass really differs
    np.testing.assert_allclose(both, plain.astype(np.float64) + mirrored[:, ::-1], rtol=1e-6, atol=1e-6)
