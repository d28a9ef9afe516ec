"""segsort.inference: kNN labelling of clusters (single scale, per-window votes) and bad inputs."""
import numpy as np
import pytest
import tensorflow as tf

from segsort import inference


def _classifier(k=1, dim=4):
    feats = np.eye(dim, dtype=np.float32)[:3]
    return inference.KnnClassifier(feats, np.array([0, 1, 2], np.int32), k, 2, 5)


def _halves_embedding(height=8, width=8):
    emb = np.zeros([height, width, 4], np.float32)
    emb[:, :width // 2, 1], emb[:, width // 2:, 2] = 1.0, 1.0
    return emb


def test_single_scale_labels_each_region_by_its_nearest_prototype():
    emb = _halves_embedding()

    def predict_fn(windows):  # a stand-in network: returns the fixed embedding at 1/8 resolution... of 8x8
        return tf.constant(np.repeat(emb[None], len(windows), 0))

    image = np.zeros([5, 7, 3], np.float32)
    pred = inference.predict_single_scale(image, predict_fn, _classifier(), (8, 8))
    assert pred.shape == (5, 7) and pred.dtype == np.uint8
    np.testing.assert_array_equal(pred[:, :4], 1)
    np.testing.assert_array_equal(pred[:, 4:], 2)


def test_window_votes_give_k_votes_per_pixel_for_the_right_classes():
    emb = tf.constant(np.stack([_halves_embedding(), _halves_embedding()[:, ::-1]]))
    # Two prototypes near each of e1 and e2, one at e0: the 2 nearest of a half agree.
    feats = np.array([[0, 1, 0.1, 0], [0, 1, 0, 0.1], [0, 0, 1, 0.1], [0.1, 0, 1, 0], [1, 0, 0, 0]], np.float32)
    classifier = inference.KnnClassifier(feats / np.linalg.norm(feats, axis=1, keepdims=True),
                                         np.array([1, 1, 2, 2, 0], np.int32), 2, 2, 5)
    votes = classifier.window_votes(emb, num_classes=21)
    assert votes.shape == (2, 8, 8, 21)
    np.testing.assert_array_equal(votes.sum(-1), 2)
    np.testing.assert_array_equal(votes.max(-1), 2)
    np.testing.assert_array_equal(votes.argmax(-1)[0, :, :4], 1)
    np.testing.assert_array_equal(votes.argmax(-1)[1, :, :4], 2)


def test_bad_inputs_are_explained():
    with pytest.raises(ValueError, match='--k_in_nearest_neighbors 5 exceeds the 3 training prototypes'):
        _classifier(k=5)
    with pytest.raises(ValueError, match="network's 8-dimensional embedding does not match the 4-dimensional"):
        _classifier().check_dim(8)
    with pytest.raises(ValueError, match=r'image of 9x7 is larger than --input_size 8,8'):
        inference.predict_single_scale(np.zeros([9, 7, 3], np.float32), None, _classifier(), (8, 8))


def test_single_scale_locations_pad_with_ignore_over_size():
    loc = inference.single_scale_locations(2, 4, (3, 5))
    np.testing.assert_allclose(loc[1, 3], [0.5, 0.75])
    np.testing.assert_allclose(loc[2, 0], [255 / 2, 255 / 4])
    np.testing.assert_allclose(loc[0, 4], [255 / 2, 255 / 4])
