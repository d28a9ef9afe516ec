"""common.crf: dense CRF wrappers with the originals' parameter sets."""
import numpy as np
import pytest

pytest.importorskip('pydensecrf.densecrf')

from common import crf  # noqa: E402


def _two_region_image(h=24, w=32):
    """Left half dark red, right half bright blue; label map 0 | 1."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (200, 30, 30)
    img[:, w // 2:] = (20, 40, 220)
    labels = np.zeros((h, w), np.int64)
    labels[:, w // 2:] = 1
    return img, labels


def _probs_from_labels(labels, num_classes, confidence):
    probs = np.full((num_classes,) + labels.shape, (1 - confidence) / (num_classes - 1), np.float32)
    np.put_along_axis(probs, labels[None], confidence, axis=0)
    return probs


@pytest.mark.parametrize('fn', [crf.crf_inference, crf.crf_inference_inf])
def test_confident_unary_keeps_regions(fn):
    img, labels = _two_region_image()
    probs = _probs_from_labels(labels, 3, 0.95)
    q = fn(img, probs, labels=3)
    assert q.shape == (3, 24, 32) and q.dtype == np.float32
    np.testing.assert_allclose(q.sum(axis=0), 1, rtol=1e-4)
    np.testing.assert_array_equal(q.argmax(axis=0), labels)


def test_smoothing_removes_isolated_noise():
    img, labels = _two_region_image()
    noisy = labels.copy()
    noise = [(3, 4), (10, 7), (20, 25), (6, 28), (15, 18)]
    for y, x in noise:
        noisy[y, x] = 1 - noisy[y, x]
    probs = _probs_from_labels(noisy, 2, 0.7)
    assert (probs.argmax(axis=0) != labels).sum() == len(noise)
    q = crf.crf_inference(img, probs, t=10, labels=2)
    np.testing.assert_array_equal(q.argmax(axis=0), labels)


def test_bilateral_kernel_follows_colour_edge():
    # The unary weakly prefers label 0 on a 2-pixel strip inside the blue region; the pairwise terms
    # (same colour, confident neighbours) pull it back to label 1 without moving the colour edge.
    img, labels = _two_region_image()
    probs = _probs_from_labels(labels, 2, 0.9)
    probs[:, :, 16:18] = np.array([0.55, 0.45], np.float32)[:, None, None]
    q = crf.crf_inference(img, probs, labels=2)
    np.testing.assert_array_equal(q.argmax(axis=0), labels)


def test_dense_crf_parameter_sets_match_named_wrappers():
    img, labels = _two_region_image(12, 16)
    rng = np.random.default_rng(0)
    probs = rng.random((4, 12, 16)).astype(np.float32)
    np.testing.assert_array_equal(crf.crf_inference(img, probs, labels=4),
                                  crf.dense_crf(img, probs, gaussian=(3, 3), bilateral=(80, 13, 10)))
    np.testing.assert_array_equal(crf.crf_inference_inf(img, probs, labels=4),
                                  crf.dense_crf(img, probs, gaussian=(2, 3), bilateral=(50, 5, 10)))
    other = crf.crf_inference_inf(img, probs, labels=4, params=crf.A2GNN_IMUTILS_INF_CRF)
    assert not np.array_equal(other, crf.crf_inference_inf(img, probs, labels=4))
    # scale_factor divides the spatial deviations
    np.testing.assert_array_equal(crf.crf_inference(img, probs, scale_factor=2, labels=4),
                                  crf.dense_crf(img, probs, gaussian=(1.5, 3), bilateral=(40, 13, 10)))


def test_bad_inputs_are_clear():
    img, labels = _two_region_image(8, 8)
    probs = _probs_from_labels(labels, 2, 0.9)
    with pytest.raises(ValueError, match='labels=21'):
        crf.crf_inference(img, probs)  # default labels=21 but probs has 2 classes
    with pytest.raises(ValueError, match='channels-last'):
        crf.crf_inference(np.transpose(img, (2, 0, 1)), probs, labels=2)
    with pytest.raises(ValueError, match='uint8'):
        crf.crf_inference(img.astype(np.float32), probs, labels=2)
