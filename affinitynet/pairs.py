"""Pixel-pair geometry of AffinityNet (PSA `tool/pyutils.get_indices_of_pairs`, `voc12/data.py`
`ExtractAffinityLabelInRadius`, `infer_aff.get_indices_in_radius`).

Pairs join a "from" pixel to the neighbours of a half-disk of radius r (so every unordered pair appears once).
Only pixels of the from-region rows [0, H-rf) and columns [rf, W-rf), rf = r - 1, are "from" pixels: pairs
starting in the last rf rows or the first/last rf columns are absent, as in the original (training and walk).
Flat indices are row-major, y * W + x.
"""
import numpy as np


def search_directions(radius):
    """Half-disk offsets (dy, dx) in the original order: [(0, 1..r-1)] then rows dy=1..r-1, dx=-r+1..r-1 with
    dx^2 + dy^2 < r^2. D = 12 / 22 / 34 for r = 3 / 4 / 5."""
    directions = [(0, x) for x in range(1, radius)]
    for y in range(1, radius):
        for x in range(-radius + 1, radius):
            if x * x + y * y < radius * radius:
                directions.append((y, x))
    return directions


def from_region(radius, size):
    """(rows, cols) of the from-region of an [H, W] grid; either may be <= 0 (no pairs)."""
    height, width = size
    rf = radius - 1
    return height - rf, width - 2 * rf


def get_indices_of_pairs(radius, size):
    """Flat indices of the pixel pairs within `radius` (PSA `get_indices_of_pairs`).

    Args:
      radius: int r; size: (H, W) of the feature grid.
    Returns:
      (ind_from [P], ind_to [D * P]) int64, P = (H - r + 1)(W - 2r + 2), `ind_to` direction-major.
    """
    radius = int(radius)
    height, width = (int(s) for s in size)
    rf = radius - 1
    rows, cols = from_region(radius, (height, width))
    if rows <= 0 or cols <= 0:
        return np.zeros([0], np.int64), np.zeros([0], np.int64)
    full = np.arange(height * width, dtype=np.int64).reshape(height, width)
    ind_from = full[:rows, rf:rf + cols].reshape(-1)
    ind_to = [full[dy:dy + rows, rf + dx:rf + dx + cols].reshape(-1) for dy, dx in search_directions(radius)]
    return ind_from, np.concatenate(ind_to)


def get_indices_in_radius(height, width, radius):
    """[M, 2] (from, to) pairs, the column stack of `get_indices_of_pairs` (the original's unused helper)."""
    ind_from, ind_to = get_indices_of_pairs(radius, (height, width))
    num_dirs = len(search_directions(int(radius))) if ind_from.size else 0
    return np.stack([np.tile(ind_from, num_dirs), ind_to], axis=1).astype(np.int64)


def extract_affinity_labels(label, cropsize, radius):
    """bg / fg / neg pair masks of a label map (PSA `ExtractAffinityLabelInRadius(cropsize, radius)(label)`).

    Args:
      label: uint8 [cropsize, cropsize] labels (0 = background, 255 = ignore).
      cropsize: side of the label map; radius: r.
    Returns:
      (bg, fg, neg) float32 [D, (cs - r + 1)(cs - 2r + 2)]: pairs of two background pixels, pairs of two pixels
      of the same foreground class, pairs of two different labels; pairs touching a 255 are in none of them.
    """
    label = np.asarray(label)
    rf = int(radius) - 1
    rows, cols = cropsize - rf, cropsize - 2 * rf
    labels_from = label[:rows, rf:rf + cols].reshape(1, -1)
    labels_to = np.stack([label[dy:dy + rows, rf + dx:rf + dx + cols].reshape(-1)
                          for dy, dx in search_directions(int(radius))])
    valid = (labels_to < 255) & (labels_from < 255)
    positive = labels_from == labels_to
    bg = positive & (labels_from == 0)
    fg = positive & (labels_from != 0) & valid
    neg = ~positive & valid
    return bg.astype(np.float32), fg.astype(np.float32), neg.astype(np.float32)
