"""AffinityNet training labels from the low/high-alpha CRF dictionaries (PSA `voc12/data.py` VOC12AffDataset)."""
import numpy as np

from affinitynet import pairs

FEATURE_STRIDE = 8


def dict_to_stack(crf_dict):
    """[H, W, k+1] float32 stack of a CRF dictionary's values in its insertion order (bg first)."""
    return np.stack([np.asarray(v, np.float32) for v in crf_dict.values()], axis=-1)


def block_mean(array, block=FEATURE_STRIDE):
    """Mean over block x block tiles of an [H, W, C] array (skimage `block_reduce(x, (b, b, 1), np.mean)`:
    a partial last tile is padded with zeros and still divided by b*b)."""
    array = np.asarray(array, np.float32)
    height, width = array.shape[:2]
    pad_h, pad_w = -height % block, -width % block
    if pad_h or pad_w:
        array = np.pad(array, ((0, pad_h), (0, pad_w), (0, 0)))
    h, w = array.shape[0] // block, array.shape[1] // block
    return array.reshape(h, block, w, block, -1).mean(axis=(1, 3), dtype=np.float64).astype(np.float32)


def label_from_pooled(pooled):
    """uint8 [h, w] affinity label of the pooled [h, w, 2(k+1)] la|ha stack (PSA's rule).

    Confident foreground comes from the low-alpha CRF (its argmax position, 255 where that is background),
    confident background from the high-alpha CRF (overrides), and blocks with no score (crop padding) are 255.
    Values are positions in the dictionaries' order, not class ids; only their equality matters.
    """
    half = pooled.shape[-1] // 2
    no_score = np.max(pooled, axis=-1) < 1e-5
    la_idx = np.argmax(pooled[..., :half], axis=-1)
    ha_idx = np.argmax(pooled[..., half:], axis=-1)
    label = la_idx.astype(np.uint8)
    label[la_idx == 0] = 255
    label[ha_idx == 0] = 0
    label[no_score] = 255
    return label


def affinity_label_from_crf(la, ha, radius=5):
    """Pair labels of one (cropped) image from its la / ha CRF scores.

    Args:
      la, ha: low / high-alpha CRF dicts ({0: bg, c+1: prob}) or their [H, W, k+1] stacks (same order).
        H and W are the crop size (a multiple of 8 in the original, 448).
      radius: pair radius (5).
    Returns:
      dict: pooled [H/8, W/8, 2(k+1)] float32, label [H/8, W/8] uint8, bg / fg / neg float32 [D, P] masks.
    """
    la = dict_to_stack(la) if isinstance(la, dict) else np.asarray(la, np.float32)
    ha = dict_to_stack(ha) if isinstance(ha, dict) else np.asarray(ha, np.float32)
    if la.shape != ha.shape:
        raise ValueError(f'la and ha CRF scores differ in shape: {la.shape} vs {ha.shape}')
    pooled = block_mean(np.concatenate([la, ha], axis=-1))
    label = label_from_pooled(pooled)
    if label.shape[0] != label.shape[1]:
        raise ValueError(f'affinity labels need a square crop, got pooled size {label.shape}')
    bg, fg, neg = pairs.extract_affinity_labels(label, label.shape[0], radius)
    return {'pooled': pooled, 'label': label, 'bg': bg, 'fg': fg, 'neg': neg}
