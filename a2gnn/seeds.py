"""A2GNN seeds: SEAM CAM normalisation and the confident "top-40%" seeds of `infer_SEAM.py`."""
import os

import numpy as np

from affinitynet.cam import fuse_cams
from common.crf import crf_inference

CRF_ALPHAS = (4, 24)
SEED_BG_POWER = 24
TOP_FRACTION_INDEX = 0.6
BG_THRESHOLD = 0.8
CRF_CONFIDENCE = 0.8


def normalize_seam_cams(cam_rv_list, label, image_size, cam_pred_bg=0.26):
    """Multi-scale SEAM CAM fusion and min-max normalisation of `infer_SEAM.py` (L55-91).

    Args:
      cam_rv_list: the model's cam_rv outputs, [1, h_i, w_i, 21] each (bg at channel 0), in the order
        scale 0.5, its flip, 1.0, its flip, ...; odd entries are flipped back.
      label: [20] multi-hot class label.
      image_size: (H, W).
      cam_pred_bg: background score of the argmax prediction.
    Returns:
      dict: sum_cam [H, W, 20] (clamped at 0, values below min+1e-5 zeroed), norm_cam [H, W, 20] (absent classes
      are -1 everywhere), cam_keys (present class indices), cam_np [H, W, 20] (norm_cam of present classes, 0
      elsewhere), cam_pred uint8 [H, W] (argmax of [cam_pred_bg; norm_cam]).
    """
    label = np.asarray(label, np.float32).reshape(-1)
    # The multi-scale fusion (resize, x label, flip back, sum) is PSA's; only the normalisation differs.
    fused = fuse_cams([np.asarray(cam)[..., 1:] for cam in cam_rv_list], label, image_size)
    sum_cam = np.array(fused['sum_cam'], np.float32)
    sum_cam[sum_cam < 0] = 0
    cam_max = np.max(sum_cam, axis=(0, 1), keepdims=True)
    cam_min = np.min(sum_cam, axis=(0, 1), keepdims=True)
    sum_cam[sum_cam < cam_min + 1e-5] = 0
    norm_cam = (sum_cam - cam_min - 1e-5) / (cam_max - cam_min + 1e-5)
    keys = np.nonzero(label > 1e-5)[0]
    cam_np = np.zeros_like(norm_cam)
    cam_np[..., keys] = norm_cam[..., keys]
    scores = np.concatenate([np.full(norm_cam.shape[:2] + (1,), cam_pred_bg, np.float32), norm_cam], axis=-1)
    return {'sum_cam': sum_cam, 'norm_cam': norm_cam, 'cam_keys': keys.astype(np.int64), 'cam_np': cam_np,
            'cam_pred': np.argmax(scores, axis=-1).astype(np.uint8)}


def _crf_full(img, cam_values, alpha, crf_output=None):
    """`_crf_with_alpha_inf`: CRF of [bg=(1-max)^alpha; CAMs], spread into 21 channels (absent ones 0).
    Returns (unary input [H, W, k+1], crf [H, W, k+1])."""
    bg = np.power(1 - np.max(cam_values, axis=-1, keepdims=True), alpha)
    unary = np.concatenate([bg, cam_values], axis=-1).astype(np.float32)
    if crf_output is None:
        crf_output = np.transpose(crf_inference(img, np.transpose(unary, (2, 0, 1)), labels=unary.shape[-1]),
                                  (1, 2, 0))
    return unary, np.asarray(crf_output, np.float32)


def confident_seeds(cam_np, cam_keys, img, crf_la=None, crf_ha=None):
    """Confident seeds (`infer_SEAM.py --crf`) and the top-100% label (`--ori_crf`).

    Args:
      cam_np: [H, W, 20] normalised SEAM CAMs (0 for absent classes); cam_keys: present class indices (0..19).
      img: uint8 [H, W, 3].
      crf_la, crf_ha: optional precomputed alpha-4 / alpha-24 CRF outputs [H, W, k+1] (else the dense CRF runs).
    Returns:
      dict: crf_label uint8 [H, W] (255 = uncertain), ori_crf_label uint8, crf_la / crf_ha [H, W, 21],
      crf_la_input / crf_ha_input [H, W, k+1] (the CRF unaries), cam_img (argmax of [bg; cams]),
      cam_sure_region bool.
    """
    cam_np = np.asarray(cam_np, np.float32)
    keys = [int(k) for k in np.asarray(cam_keys).reshape(-1)]
    img = np.asarray(img, np.uint8)
    height, width = cam_np.shape[:2]
    bg = np.power(1 - np.max(cam_np, axis=-1), SEED_BG_POWER)
    cam_all = np.concatenate([bg[..., None], cam_np], axis=-1)
    cam_img = np.argmax(cam_all, axis=-1)
    cam_values = cam_np[..., keys]
    full = {}
    inputs = {}
    for name, alpha, given in (('la', CRF_ALPHAS[0], crf_la), ('ha', CRF_ALPHAS[1], crf_ha)):
        unary, crf = _crf_full(img, cam_values, alpha, given)
        spread = np.zeros((height, width, 21), np.float32)
        spread[..., 0] = crf[..., 0]
        for i, key in enumerate(keys):
            spread[..., key + 1] = crf[..., i + 1]
        full[name], inputs[name] = spread, unary
    la_label = np.argmax(full['la'], axis=-1)
    ha_label = np.argmax(full['ha'], axis=-1)
    crf_label = la_label.copy()
    crf_label[la_label == 0] = 255

    sure = np.zeros((height, width), bool)
    for class_i in np.unique(la_label):
        score = np.where(cam_img == class_i, cam_all[..., class_i], 0)
        if class_i != 0:
            ordered = np.sort(score[score > 0.01])
            position = int(ordered.shape[0] * TOP_FRACTION_INDEX)
            if position >= 1:
                sure |= score > ordered[position]
        else:
            sure |= score > BG_THRESHOLD
    crf_label[ha_label == 0] = 0
    ori_crf_label = crf_label.copy()
    confidence = np.max(np.concatenate([full['ha'][..., :1], full['la'][..., 1:]], axis=-1), axis=-1)
    crf_label[(confidence < CRF_CONFIDENCE) | ~sure] = 255
    return {'crf_label': crf_label.astype(np.uint8), 'ori_crf_label': ori_crf_label.astype(np.uint8),
            'crf_la': full['la'], 'crf_ha': full['ha'], 'crf_la_input': inputs['la'],
            'crf_ha_input': inputs['ha'], 'cam_img': cam_img, 'cam_sure_region': sure}


def read_seed(path, image_shape=None):
    """A seed PNG with raw indices (0 bg, 1..20 class, 255 unlabelled) as uint8 [H, W].

    Raises:
      FileNotFoundError / ValueError naming the file: missing, not single-channel, values outside 0..20/255, or a
      size different from `image_shape` (H, W).
    """
    from PIL import Image
    if not os.path.isfile(path):
        raise FileNotFoundError(f'seed file not found: {path}')
    with Image.open(path) as image:
        if image.mode not in ('L', 'P'):
            raise ValueError(f'{path}: seed PNG must be single-channel (mode L), got mode {image.mode}')
        seed = np.array(image, np.uint8)
    bad = np.setdiff1d(np.unique(seed), np.r_[np.arange(21), 255])
    if bad.size:
        raise ValueError(f'{path}: seed values must be 0..20 or 255, found {bad[:5].tolist()}')
    if image_shape is not None and seed.shape != tuple(image_shape[:2]):
        raise ValueError(f'{path}: seed size {seed.shape[0]}x{seed.shape[1]} differs from its image '
                         f'{image_shape[0]}x{image_shape[1]}')
    return seed


def read_xml_annotation(path, one_based=False):
    """Boxes of a VOC XML file, as `mytool.read_xml_annotation`: every <object> in file order.

    Args:
      path: the XML file.
      one_based: subtract 1 from every coordinate (VOC is 1-based). The default False keeps the original's
        convention (1-based numbers used as 0-based inclusive indices: boxes shifted 1 px down and right).
    Returns:
      (class_ids [B] 1..20, boxes [B, 4] int64 (xmin, ymin, xmax, ymax) inclusive).
    Raises:
      ValueError naming the file: unreadable XML, an unknown class, or no object.
    """
    import xml.etree.ElementTree as ET
    from a2gnn.losses import VOC_CLASS_IDS
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as error:
        raise ValueError(f'{path}: cannot read the box annotation ({error})') from error
    classes, boxes = [], []
    for obj in root.findall('object'):
        name = obj.find('name').text.strip()
        if name not in VOC_CLASS_IDS:
            raise ValueError(f'{path}: unknown class {name!r}')
        box = obj.find('bndbox')
        coords = [int(float(box.find(k).text)) for k in ('xmin', 'ymin', 'xmax', 'ymax')]
        boxes.append([c - 1 for c in coords] if one_based else coords)
        classes.append(VOC_CLASS_IDS[name])
    if not boxes:
        raise ValueError(f'{path}: no <object> boxes (the box pipeline needs at least one)')
    return np.array(classes, np.int64), np.array(boxes, np.int64)
