"""Fully connected CRF (pydensecrf) with the parameter sets of PSA and A2GNN.

The originals call pydensecrf the same way everywhere: unary = -log(clip(probs, 1e-5, 1)), one Gaussian
(smoothness) kernel, one bilateral (appearance) kernel, `t` mean-field iterations; only the kernel parameters
differ. pydensecrf works on NumPy arrays, so the port reuses it unchanged (package `pydensecrf2`, import name
`pydensecrf`; imported lazily so the rest of the project works without it).

Layouts follow the originals: image channels-last uint8 [H, W, 3] RGB; probabilities class-first [C, H, W]
(pydensecrf's layout); the result is class-first float32 [C, H, W] marginals.
"""
import numpy as np

# Kernel parameters: gaussian = (sxy, compat), bilateral = (sxy, srgb, compat); sxy are divided by scale_factor.
PSA_CRF = {'gaussian': (3, 3), 'bilateral': (80, 13, 10)}  # psa/a2gnn tool/imutils.crf_inference
A2GNN_INF_CRF = {'gaussian': (2, 3), 'bilateral': (50, 5, 10)}  # a2gnn mytool.crf_inference_inf (final labels)
A2GNN_IMUTILS_INF_CRF = {'gaussian': (4, 3), 'bilateral': (83, 5, 3)}  # a2gnn tool/imutils.crf_inference_inf


def _import_densecrf():
    try:
        import pydensecrf.densecrf as densecrf
        from pydensecrf.utils import unary_from_softmax
    except ImportError as error:
        raise ImportError('dense CRF needs the pydensecrf2 package (import name `pydensecrf`): '
                          'pip install pydensecrf2') from error
    return densecrf, unary_from_softmax


def dense_crf(img, probs, t=10, scale_factor=1, labels=None, gaussian=PSA_CRF['gaussian'],
              bilateral=PSA_CRF['bilateral']):
    """Dense CRF mean-field inference with explicit kernel parameters.

    Args:
      img: uint8 [H, W, 3] RGB image.
      probs: float [C, H, W] class probabilities (need not be normalised; clipped to [1e-5, 1] before -log).
      t: number of mean-field iterations.
      scale_factor: divides both spatial standard deviations (for down-scaled inputs).
      labels: C (default probs.shape[0]); must equal probs.shape[0].
      gaussian: (sxy, compat) of the smoothness kernel.
      bilateral: (sxy, srgb, compat) of the appearance kernel.
    Returns:
      float32 [C, H, W] marginals (each pixel sums to 1).
    """
    densecrf, unary_from_softmax = _import_densecrf()
    img = np.asarray(img)
    probs = np.asarray(probs)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'img must be [H, W, 3] (channels-last RGB), got shape {img.shape}')
    if img.dtype != np.uint8:
        raise ValueError(f'img must be uint8 (pydensecrf reads raw RGB bytes), got {img.dtype}')
    h, w = img.shape[:2]
    n_labels = probs.shape[0] if labels is None else int(labels)
    if probs.shape != (n_labels, h, w):
        raise ValueError(f'probs must be [labels={n_labels}, H={h}, W={w}] (class-first), got {probs.shape}')

    crf = densecrf.DenseCRF2D(w, h, n_labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    gauss_sxy, gauss_compat = gaussian
    crf.addPairwiseGaussian(sxy=gauss_sxy / scale_factor, compat=gauss_compat)
    bil_sxy, bil_srgb, bil_compat = bilateral
    crf.addPairwiseBilateral(sxy=bil_sxy / scale_factor, srgb=bil_srgb, rgbim=np.ascontiguousarray(img),
                             compat=bil_compat)
    marginals = crf.inference(t)
    return np.array(marginals, dtype=np.float32).reshape((n_labels, h, w))


def crf_inference(img, probs, t=10, scale_factor=1, labels=21):
    """PSA `tool/imutils.crf_inference` (also A2GNN's): Gaussian sxy 3 compat 3, bilateral sxy 80 srgb 13
    compat 10. Used for PSA's low/high-alpha affinity labels and A2GNN's SEAM seeds.

    Args:
      img: uint8 [H, W, 3] RGB; probs: float [labels, H, W]; t: iterations; scale_factor: divides sxy;
      labels: number of classes (= probs.shape[0]).
    Returns:
      float32 [labels, H, W] marginals.
    """
    return dense_crf(img, probs, t, scale_factor, labels, **PSA_CRF)


def crf_inference_inf(img, probs, t=10, scale_factor=1, labels=21, params=A2GNN_INF_CRF):
    """A2GNN `mytool.crf_inference_inf` (final pseudo labels): Gaussian sxy 2 compat 3, bilateral sxy 50 srgb 5
    compat 10. `params=A2GNN_IMUTILS_INF_CRF` gives the unused `tool/imutils.crf_inference_inf` of the same name.

    Args:
      img: uint8 [H, W, 3] RGB; probs: float [labels, H, W]; t: iterations; scale_factor: divides sxy;
      labels: number of classes (= probs.shape[0]); params: dict with 'gaussian' and 'bilateral'.
    Returns:
      float32 [labels, H, W] marginals.
    """
    return dense_crf(img, probs, t, scale_factor, labels, **params)
