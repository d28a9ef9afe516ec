"""segsort.vis_utils: principal components against NumPy (up to sign), PCA images of the quick start."""
import numpy as np

from segsort import vis_utils


def test_pca_matches_numpy_up_to_sign():
    rng = np.random.default_rng(0)
    data = rng.normal(size=[200, 6]) * np.array([5, 3, 2, 0.5, 0.2, 0.1])
    data = (data @ np.linalg.qr(rng.normal(size=[6, 6]))[0]).astype(np.float32)
    centred = data - data.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    reference = centred @ vt[:3].T
    ours = vis_utils.pca(data.reshape(10, 20, 6), 3).reshape(-1, 3)
    for k in range(3):
        sign = np.sign(np.dot(ours[:, k], reference[:, k]))
        np.testing.assert_allclose(sign * ours[:, k], reference[:, k], rtol=1e-3, atol=1e-3)


def test_embedding_pca_rgb_spans_the_byte_range():
    from segsort.quickstart import embedding_pca_rgb
    emb = np.random.default_rng(1).normal(size=[8, 9, 5]).astype(np.float32)
    rgb = embedding_pca_rgb(emb)
    assert rgb.shape == (8, 9, 3) and rgb.dtype == np.uint8
    assert (rgb.min(axis=(0, 1)) == 0).all() and (rgb.max(axis=(0, 1)) == 255).all()
