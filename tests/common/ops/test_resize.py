"""Legacy (TF1) resize conventions against an independent NumPy formula: src = dst * in / out, corner-anchored."""
import numpy as np

from common.ops.resize import resize_bilinear_legacy, resize_nearest_legacy


def numpy_legacy_bilinear(x, out_h, out_w):
    n, h, w, c = x.shape
    out = np.zeros((n, out_h, out_w, c), np.float64)
    for i in range(out_h):
        sy = i * h / out_h
        y0 = int(np.floor(sy)); y1 = min(y0 + 1, h - 1); fy = sy - y0
        for j in range(out_w):
            sx = j * w / out_w
            x0 = int(np.floor(sx)); x1 = min(x0 + 1, w - 1); fx = sx - x0
            top = x[:, y0, x0] * (1 - fx) + x[:, y0, x1] * fx
            bottom = x[:, y1, x0] * (1 - fx) + x[:, y1, x1] * fx
            out[:, i, j] = top * (1 - fy) + bottom * fy
    return out


def test_bilinear_is_corner_anchored():
    x = np.random.default_rng(0).standard_normal((2, 5, 7, 3)).astype(np.float32)
    for size in ((12, 12), (3, 4), (5, 7), (9, 2)):
        np.testing.assert_allclose(resize_bilinear_legacy(x, size).numpy(), numpy_legacy_bilinear(x, *size),
                                   rtol=1e-5, atol=1e-5)


def test_nearest_floors_and_keeps_dtype():
    labels = np.arange(5 * 7, dtype=np.uint8).reshape(1, 5, 7, 1)
    out = resize_nearest_legacy(labels, (3, 4)).numpy()
    rows = np.floor(np.arange(3) * 5 / 3).astype(int)
    cols = np.floor(np.arange(4) * 7 / 4).astype(int)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, :, :, 0], labels[0, rows][:, cols, 0])
