"""Colour maps of the originals (`misc/colormapvoc.mat`, `misc/colormapcs.mat`) and label colouring.

Both maps are 256 x 3 uint8 tables indexed by label id, so `colormap[label]` colours a label map directly.
"""
import os

import numpy as np

CITYSCAPES_TRAINID_COLORS = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32))

VOC_CLASS_NAMES = ('background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair',
                   'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa',
                   'train', 'tvmonitor')

CITYSCAPES_CLASS_NAMES = ('road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light',
                          'traffic sign', 'vegetation', 'terrain', 'sky', 'person', 'rider', 'car', 'truck', 'bus',
                          'train', 'motorcycle', 'bicycle')


def voc_colormap():
    """The PASCAL VOC palette: label i gets the bit-interleaved colour of i (0 black, 255 (224,224,192)).

    Returns:
      uint8 array [256, 3].
    """
    cmap = np.zeros((256, 3), np.uint8)
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


def cityscapes_colormap():
    """The `colormapcs` table: trainIds 0..18 in Cityscapes colours, 19..254 as VOC, 255 black.

    Returns:
      uint8 array [256, 3].
    """
    cmap = voc_colormap()
    cmap[:len(CITYSCAPES_TRAINID_COLORS)] = CITYSCAPES_TRAINID_COLORS
    cmap[255] = 0
    return cmap


def get_colormap(name):
    """Colour map by name: 'voc' / 'cityscapes', or a path to an original `colormap*.mat` file.

    Args:
      name: 'voc', 'cityscapes' (aliases 'colormapvoc', 'colormapcs', 'cs') or a `.mat` path. The originals'
        command-line values `misc/colormapvoc.mat` / `misc/colormapcs.mat` (any folder) name the built-in tables
        when no such file exists, so their bash lines run unchanged.
    Returns:
      uint8 array [256, 3].
    """
    key = str(name).lower()
    if key.endswith('.mat') and not os.path.isfile(name):
        key = {'colormapvoc.mat': 'voc', 'colormapcs.mat': 'cityscapes'}.get(os.path.basename(key), key)
    if key in ('voc', 'colormapvoc', 'voc12', 'pascal'):
        return voc_colormap()
    if key in ('cityscapes', 'colormapcs', 'cs', 'gta5'):
        return cityscapes_colormap()
    if key.endswith('.mat'):
        import scipy.io
        if not os.path.isfile(name):
            raise FileNotFoundError(f'--colormap: no such file: {name}')
        mat_key = os.path.splitext(os.path.basename(name))[0]
        table = scipy.io.loadmat(name)[mat_key]
        return (table * 255).astype(np.uint8)
    raise ValueError(f"--colormap: unknown colour map {name!r}; use 'voc', 'cityscapes' or a .mat file")


def colorize(label, colormap='voc'):
    """Colours a label map.

    Args:
      label: integer array [H, W] (values 0..255).
      colormap: a name accepted by `get_colormap` or a [256, 3] uint8 table.
    Returns:
      uint8 array [H, W, 3].
    """
    table = get_colormap(colormap) if isinstance(colormap, str) else np.asarray(colormap, np.uint8)
    return table[np.asarray(label, np.int64).clip(0, 255)]
