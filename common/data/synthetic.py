"""Small synthetic data sets written in the REAL on-disk layouts (VOC 2012 + SBD, Cityscapes, GTA5).

Every pipeline of the project (AAF/SegSort readers, PSA/A2GNN data, benchmarks) can run end to end on them.
Images hold textured objects whose class is recognisable from colour AND texture (each class has its own base colour
and its own pattern type/period) over cluttered, low-saturation backgrounds, then pass through JPEG compression, so a
small network learns them and a wrong pipeline (swapped channels, shifted labels, bad list parsing) visibly fails.

Layouts written under `out_dir` (`layout='voc'`):
  VOCdevkit/VOC2012/JPEGImages/<id>.jpg
  VOCdevkit/VOC2012/Annotations/<id>.xml            VOC XML: objects (name, pose, truncated, difficult, bndbox in
                                                     1-based pixels), person parts (head/hand) like VOC
  VOCdevkit/VOC2012/segcls/<id>.png                 8-bit GRAYSCALE class ids 0..20, 255 void ring (VOC-seg ids)
  VOCdevkit/VOC2012/SegmentationClass/<id>.png      palette PNG (VOC colour map), same indices (VOC-seg ids)
  VOCdevkit/VOC2012/SegmentationObject/<id>.png     palette PNG, instance ids 1..K, 255 ring (VOC-seg ids)
  VOCdevkit/VOC2012/SegmentationClassAug/<id>.png   palette PNG for every id (SBD ids without the void ring)
  VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val}.txt   VOC id files (VOC-seg ids)
  VOCdevkit/sbd/dataset/{train,val}.txt             SBD id files (SBD-only ids, plus some VOC ids, as the real ones)
  VOCdevkit/VOC2012/hed/<id>.png                    8-bit over-segmentation ids 1..K (superpixel-like cells cut by
                                                     object borders)
  VOCdevkit/sbd/dataset/clsimg/<id>.png             8-bit grayscale class ids of the SBD-only ids (no void ring)
  dataset/voc12/{train+,train,val}.txt              AAF/SegSort lists, `VOC2012/JPEGImages/<id>.jpg <mask>`
  voc12/{train_aug,train,val}.txt                   PSA/A2GNN lists,
                                                    `/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png`
  voc12/cls_labels.npy                              dict id -> float32[20] (train_aug + val ids)
  data/Init_Label/{SEAM_Box,SEAM_Scribble,Scribble_SuperPixel,SEAM_Point,SEAM_Image}/<id>.png
                                                    A2GNN seeds ('L' PNG, 0 bg, 1..20 class, 255 unlabelled) for the
                                                    train_aug ids
`layout='cityscapes'`:
  Cityscapes/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
  Cityscapes/gtFine/<split>/<city>/<name>_gtFine_labelIds.png     ('L', Cityscapes labelIds 0..33)
  Cityscapes/gtFine/<split>/<city>/<name>_gtFine_instanceIds.png  (16-bit, labelId*1000+k for instance classes)
  Cityscapes/gtFineId/<split>/<city>/<name>_gtFineId_labelIds.png ('L', trainIds 0..18 / 255, AAF convention)
  Cityscapes/gtFineId/<split>/all/<name>_gtFineId_labelIds.png    (flattened copy for the benchmark)
  dataset/cityscapes/{train,val}.txt
`layout='gta5'`:
  GTA5/images/<5-digit id>.png, GTA5/labels/<id>.png (palette PNG, indices = Cityscapes labelIds),
  dataset/gta5/train.txt

All files are written atomically (temp file + os.replace); generation is deterministic for a seed (image i depends on
(seed, i) only), so rerunning into the same directory rewrites identical bytes.
"""
import io
import json
import os
import xml.etree.ElementTree as ET

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.spatial import cKDTree

from common.colormap import (CITYSCAPES_CLASS_NAMES, CITYSCAPES_TRAINID_COLORS, VOC_CLASS_NAMES, cityscapes_colormap,
                             voc_colormap)
from common.data.datasets import CITYSCAPES_LABELID_TO_TRAINID, cityscapes_label_lut
from common.io import atomic_write_bytes, save_png, check_writable_dir

LAYOUTS = ('voc', 'cityscapes', 'gta5')
IGNORE_LABEL = 255

# Base colours of the 20 VOC classes (index c-1 for class c): saturated corners of a 3-level RGB grid, pairwise
# >= 100 apart, while backgrounds stay near grey, so a nearest-mean colour rule already separates most pixels.
VOC_CLASS_COLORS = (
    (240, 40, 40), (40, 240, 40), (40, 40, 240), (240, 240, 40), (240, 40, 240), (40, 240, 240), (240, 140, 40),
    (140, 40, 240), (40, 140, 240), (240, 40, 140), (140, 240, 40), (40, 240, 140), (140, 40, 40), (40, 140, 40),
    (40, 40, 140), (140, 140, 40), (140, 40, 140), (40, 140, 140), (240, 240, 140), (240, 140, 240))
# Texture of class c: pattern type (c-1) % 4 (h-stripes, v-stripes, checker, dots) with period 4 + 2*((c-1)//4) px.
TEXTURE_TYPES = ('hstripes', 'vstripes', 'checker', 'dots')
TEXTURE_AMPLITUDE = 28.0

SEED_FOLDERS = ('SEAM_Box', 'SEAM_Scribble', 'Scribble_SuperPixel', 'SEAM_Point', 'SEAM_Image')

CITYSCAPES_INSTANCE_LABELIDS = (24, 25, 26, 27, 28, 29, 30, 31, 32, 33)
CITYSCAPES_TRAIN_CITIES = ('aachen', 'bochum', 'bremen')
CITYSCAPES_VAL_CITIES = ('frankfurt', 'lindau')


# ----------------------------------------------------------------------------------------------------------------
# Atomic file output

def _jpeg_bytes(rgb, quality):
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(rgb, np.uint8), 'RGB').save(buffer, format='JPEG', quality=quality)
    return buffer.getvalue()


def _jpeg_roundtrip(rgb, quality):
    return np.asarray(Image.open(io.BytesIO(_jpeg_bytes(rgb, quality))).convert('RGB'))


# ----------------------------------------------------------------------------------------------------------------
# Drawing primitives

def class_texture(class_index, height, width, phase=(0, 0)):
    """The +-1 texture pattern of a VOC class (see TEXTURE_TYPES).

    Args:
      class_index: 1..20.
      height, width: output size.
      phase: (dy, dx) offset of the pattern.
    Returns:
      float32 [H, W] with values in {-1, +1}.
    """
    kind = TEXTURE_TYPES[(class_index - 1) % 4]
    period = 4 + 2 * ((class_index - 1) // 4)
    yy, xx = np.mgrid[0:height, 0:width]
    yy = yy + phase[0]
    xx = xx + phase[1]
    half = period / 2.0
    if kind == 'hstripes':
        on = (yy % period) < half
    elif kind == 'vstripes':
        on = (xx % period) < half
    elif kind == 'checker':
        on = ((yy // max(1, int(half))) + (xx // max(1, int(half)))) % 2 == 0
    else:  # dots: a small disc in every period x period cell
        dy = (yy % period) - (period - 1) / 2.0
        dx = (xx % period) - (period - 1) / 2.0
        on = dy * dy + dx * dx <= (period / 3.0) ** 2
    return np.where(on, 1.0, -1.0).astype(np.float32)


def _random_shape_mask(rng, height, width, min_frac=0.25, max_frac=0.6):
    """A random ellipse, polygon or (rotated) rectangle as a bool mask."""
    bh = rng.uniform(min_frac, max_frac) * height
    bw = rng.uniform(min_frac, max_frac) * width
    cy = rng.uniform(0.1, 0.9) * height
    cx = rng.uniform(0.1, 0.9) * width
    canvas = Image.new('L', (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    kind = rng.integers(3)
    if kind == 0:
        draw.ellipse([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], fill=1)
    elif kind == 1:
        n = int(rng.integers(5, 10))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = rng.uniform(0.6, 1.0, n)
        points = [(cx + 0.5 * bw * r * np.cos(a), cy + 0.5 * bh * r * np.sin(a)) for a, r in zip(angles, radii)]
        draw.polygon(points, fill=1)
    else:
        theta = rng.uniform(-0.5, 0.5)
        corners = np.array([[-bw, -bh], [bw, -bh], [bw, bh], [-bw, bh]]) / 2.0
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        corners = corners @ rot.T + [cx, cy]
        draw.polygon([tuple(p) for p in corners], fill=1)
    return np.asarray(canvas, np.uint8) > 0


def _smooth_noise(rng, height, width, cells, amplitude):
    coarse = rng.uniform(-1, 1, (cells + 1, cells + 1)).astype(np.float32)
    zoom = ((height + 1) / coarse.shape[0], (width + 1) / coarse.shape[1])
    fine = ndimage.zoom(coarse, zoom, order=1)[:height, :width]
    return amplitude * fine


def _background(rng, height, width):
    """Cluttered low-saturation background: grey + tint, gradient, smooth noise and small grey distractors."""
    grey = rng.uniform(95, 165)
    tint = rng.uniform(-12, 12, 3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    gradient = (np.cos(angle) * (xx / width - 0.5) + np.sin(angle) * (yy / height - 0.5)) * rng.uniform(10, 30)
    base = grey + gradient + _smooth_noise(rng, height, width, 4, 10.0)
    img = base[..., None] + tint[None, None, :]
    canvas = Image.fromarray(np.zeros((height, width), np.uint8))
    draw = ImageDraw.Draw(canvas)
    num_distractors = int(rng.integers(3, 9))
    shades = []
    for k in range(num_distractors):
        s = rng.uniform(3, 10)
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        box = [cx - s, cy - s / 2 * rng.uniform(1, 2), cx + s, cy + s / 2 * rng.uniform(1, 2)]
        if rng.integers(2):
            draw.ellipse(box, fill=k + 1)
        else:
            draw.rectangle(box, fill=k + 1)
        shades.append(rng.uniform(-30, 30) + rng.uniform(-8, 8, 3))
    index = np.asarray(canvas)
    for k, shade in enumerate(shades):
        img[index == k + 1] += shade
    return img


def _paint_class(img, mask, base_color, texture, rng):
    offset = rng.uniform(-10, 10)
    values = np.asarray(base_color, np.float32)[None, None, :] + offset + TEXTURE_AMPLITUDE * texture[..., None]
    img[mask] = values[mask]


def _finish_image(img, rng):
    img = img + rng.normal(0, 3.0, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def void_ring(instance_map, width=3):
    """VOC-style void ring: pixels within `width` (a square window) of a border between two instances/background.

    Args:
      instance_map: int [H, W], 0 = background, k = object k.
      width: window size of the morphological gradient (ring thickness ~ width - 1 pixels).
    Returns:
      bool [H, W].
    """
    if width <= 1:
        return np.zeros(instance_map.shape, bool)
    return ndimage.maximum_filter(instance_map, size=width) != ndimage.minimum_filter(instance_map, size=width)


def over_segmentation(instance_map, rng, cell=None):
    """Superpixel-like partition: jittered-grid Voronoi cells cut by every object border.

    Args:
      instance_map: int [H, W] instance ids (0 = background).
      rng: numpy Generator.
      cell: approximate cell size in pixels (default ~ sqrt(H*W/40)).
    Returns:
      uint8 [H, W] segment ids 1..K (K <= 254), each segment inside one instance.
    """
    height, width = instance_map.shape
    cell = cell or max(12, int(np.sqrt(height * width / 40.0)))
    while True:
        gy = np.arange(cell / 2.0, height, cell)
        gx = np.arange(cell / 2.0, width, cell)
        centres = np.stack(np.meshgrid(gy, gx, indexing='ij'), -1).reshape(-1, 2)
        centres = centres + rng.uniform(-cell / 3.0, cell / 3.0, centres.shape)
        pixels = np.stack(np.mgrid[0:height, 0:width], -1).reshape(-1, 2)
        voronoi = cKDTree(centres).query(pixels)[1].reshape(height, width)
        combined = voronoi.astype(np.int64) * (int(instance_map.max()) + 1) + instance_map
        _, segments = np.unique(combined, return_inverse=True)
        segments = segments.reshape(height, width)
        if segments.max() < 254:
            return (segments + 1).astype(np.uint8)
        cell = int(cell * 1.5)


# ----------------------------------------------------------------------------------------------------------------
# VOC

def voc_image_id(index):
    """The VOC-style 11-character id `YYYY_NNNNNN` of synthetic image `index`."""
    return f'{2007 + index % 5}_{index:06d}'


def _voc_sizes(rng, height, width):
    h = int(height) if height else int(rng.integers(96, 161))
    w = int(width) if width else int(rng.integers(96, 161))
    return h, w


def _place_objects(rng, h, w, classes=None):
    """Draws 2-4 objects of distinct classes (of `classes`, a sorted tuple of class ids, or all 20 if None; at
    most as many objects as classes); later ones occlude earlier ones, each keeps a visible area."""
    num_objects = int(rng.integers(2, 5))
    if classes is None:
        classes = [int(c) + 1 for c in rng.choice(20, num_objects, replace=False)]
    else:
        classes = [classes[int(i)] for i in rng.choice(len(classes), min(num_objects, len(classes)), replace=False)]
    min_area = max(30, int(0.02 * h * w))
    instance_map = np.zeros((h, w), np.uint8)
    kept = []
    for c in classes:
        for _ in range(30):
            mask = _random_shape_mask(rng, h, w)
            trial = instance_map.copy()
            trial[mask] = len(kept) + 1
            areas = np.bincount(trial.ravel(), minlength=len(kept) + 2)[1:len(kept) + 2]
            if all(a >= min_area for a in areas):
                instance_map = trial
                kept.append(c)
                break
    return kept, instance_map


def _check_classes(classes):
    """None, or the sorted distinct VOC class ids of `classes` (1..20, at least 2)."""
    if classes is None:
        return None
    ids = sorted({int(c) for c in classes})
    if len(ids) < 2 or ids[0] < 1 or ids[-1] > 20:
        raise ValueError(f'--classes: need at least 2 distinct VOC class ids in 1..20, got {list(classes)}')
    return tuple(ids)


def make_voc_sample(seed, index, height=None, width=None, void_width=3, jpeg_quality=90, classes=None):
    """One synthetic VOC image with its annotations (pure: depends on (seed, index) only).

    Args:
      seed: data set seed.
      index: image index.
      height, width: fixed size, or None for a random size in 96..160 (per image, not square).
      void_width: void ring window (`void_ring`); 0/1 disables the ring.
      jpeg_quality: JPEG quality of the stored image.
      classes: optional VOC class ids (1..20, at least 2 distinct) the objects are drawn from; None = all 20
        (the default draw, unchanged).
    Returns:
      dict with 'jpeg' (bytes), 'image' (uint8 [H,W,3] decoded JPEG), 'class_map' (uint8 [H,W], no ring),
      'instance_map' (uint8 [H,W]), 'ring' (bool [H,W]), 'objects' (list of dicts: class_index, name, box
      (xmin, ymin, xmax, ymax) 0-based inclusive of the visible pixels, truncated, instance), 'hed' (uint8 [H,W]),
      'id' (str) and 'rng' (the numpy Generator after drawing the image; `make_seeds` continues from it).
    """
    classes = _check_classes(classes)
    for attempt in range(100):
        rng = np.random.default_rng([int(seed), int(index), 0x5EED, attempt])
        h, w = _voc_sizes(rng, height, width)
        kept, instance_map = _place_objects(rng, h, w, classes)
        if len(kept) >= 2:  # otherwise a pathological draw: redraw the whole image
            break
    class_lut = np.array([0] + kept, np.uint8)
    class_map = class_lut[instance_map]

    img = _background(rng, h, w)
    for k, c in enumerate(kept, start=1):
        phase = tuple(int(p) for p in rng.integers(0, 16, 2))
        _paint_class(img, instance_map == k, VOC_CLASS_COLORS[c - 1], class_texture(c, h, w, phase), rng)
    rgb = _finish_image(img, rng)
    jpeg = _jpeg_bytes(rgb, jpeg_quality)
    decoded = np.asarray(Image.open(io.BytesIO(jpeg)).convert('RGB'))

    objects = []
    for k, c in enumerate(kept, start=1):
        ys, xs = np.nonzero(instance_map == k)
        box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
        truncated = box[0] == 0 or box[1] == 0 or box[2] == w - 1 or box[3] == h - 1
        objects.append({'class_index': c, 'name': VOC_CLASS_NAMES[c], 'box': box, 'truncated': bool(truncated),
                        'instance': k})
    return {'id': voc_image_id(index), 'jpeg': jpeg, 'image': decoded, 'class_map': class_map,
            'instance_map': instance_map, 'ring': void_ring(instance_map, void_width), 'objects': objects,
            'hed': over_segmentation(instance_map, rng), 'rng': rng}


def voc_annotation_xml(image_id, height, width, objects, segmented=True):
    """VOC 2012 annotation XML text (1-based bndbox; person objects get head/hand parts like VOC)."""
    root = ET.Element('annotation')
    ET.SubElement(root, 'folder').text = 'VOC2012'
    ET.SubElement(root, 'filename').text = image_id + '.jpg'
    source = ET.SubElement(root, 'source')
    ET.SubElement(source, 'database').text = 'affinity-seg synthetic'
    size = ET.SubElement(root, 'size')
    ET.SubElement(size, 'width').text = str(width)
    ET.SubElement(size, 'height').text = str(height)
    ET.SubElement(size, 'depth').text = '3'
    ET.SubElement(root, 'segmented').text = '1' if segmented else '0'

    def add_box(parent, box):
        bndbox = ET.SubElement(parent, 'bndbox')
        for tag, value in zip(('xmin', 'ymin', 'xmax', 'ymax'), box):
            ET.SubElement(bndbox, tag).text = str(int(value) + 1)

    for obj in objects:
        node = ET.SubElement(root, 'object')
        ET.SubElement(node, 'name').text = obj['name']
        ET.SubElement(node, 'pose').text = 'Unspecified'
        ET.SubElement(node, 'truncated').text = '1' if obj['truncated'] else '0'
        ET.SubElement(node, 'difficult').text = '0'
        add_box(node, obj['box'])
        if obj['name'] == 'person':
            x0, y0, x1, y1 = obj['box']
            for part, part_box in (('head', (x0, y0, (x0 + x1) // 2, (y0 + y1) // 3)),
                                   ('hand', ((x0 + x1) // 2, (y0 + y1) // 2, x1, (y0 + 2 * y1) // 3))):
                part_node = ET.SubElement(node, 'part')
                ET.SubElement(part_node, 'name').text = part
                add_box(part_node, part_box)
    ET.indent(root, space='\t')
    return ET.tostring(root, encoding='unicode') + '\n'


def _disc_mask(shape, centres, radius):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    out = np.zeros(shape, bool)
    for cy, cx in centres:
        out |= (yy - cy) ** 2 + (xx - cx) ** 2 <= radius * radius
    return out


def _interior_point(mask, depth):
    """The pixel of `mask` deepest in the `depth` map (a point well inside the object)."""
    return np.unravel_index(int(np.argmax(np.where(mask, depth + 1.0, 0.0))), mask.shape)


def _object_core(inside, keep=0.4):
    """The `keep` fraction of the object's pixels farthest from its border (bool [H, W])."""
    depth = ndimage.distance_transform_edt(np.pad(inside, 1))[1:-1, 1:-1]
    return inside & (depth >= np.percentile(depth[inside], 100 * (1 - keep)))


def make_seeds(sample, rng):
    """A2GNN-style seed labels derived from the ground truth ('L', 0 bg, 1..20 class, 255 unlabelled).

    - SEAM_Box: 0 outside every box; inside a box the object's core (as SEAM_Image) gets the class, the rest 255.
    - SEAM_Scribble: one short line through each object's interior and one over the background, rest 255.
    - Scribble_SuperPixel: the scribbles grown to the over-segmentation cells they touch.
    - SEAM_Point: a radius-2 disc at an interior point of each object and at 2 background points.
    - SEAM_Image: confident image-level seeds ("top 40%"): the 40% of each object's pixels farthest from its border,
      background far from objects, rest 255.
    Returns:
      dict folder name -> uint8 [H, W].
    """
    class_map, instance_map, hed = sample['class_map'], sample['instance_map'], sample['hed']
    h, w = class_map.shape
    seeds = {}
    # distance of every pixel to the nearest instance border or image edge, for picking interior points
    depth = ndimage.distance_transform_edt(np.pad(~void_ring(instance_map, 2), 1, constant_values=False))[1:-1, 1:-1]

    # Box seeds as the original's (box-filled regions, the parts of the box that may be background unlabelled):
    # the object's confident core inside its box, not a thin erosion of the ground truth that no propagation
    # could improve on.
    box_seed = np.zeros((h, w), np.uint8)
    for obj in sample['objects']:
        x0, y0, x1, y1 = obj['box']
        box_seed[y0:y1 + 1, x0:x1 + 1] = IGNORE_LABEL
    for obj in sample['objects']:
        box_seed[_object_core(instance_map == obj['instance'])] = obj['class_index']
    seeds['SEAM_Box'] = box_seed

    scribble = np.full((h, w), IGNORE_LABEL, np.uint8)
    canvas = Image.new('L', (w, h), IGNORE_LABEL)
    draw = ImageDraw.Draw(canvas)
    background = ndimage.binary_erosion(instance_map == 0, iterations=4)
    for obj in sample['objects']:
        inside = ndimage.binary_erosion(instance_map == obj['instance'], iterations=1)
        if not inside.any():
            inside = instance_map == obj['instance']
        cy, cx = _interior_point(inside, depth)
        ys, xs = np.nonzero(inside)
        far = np.argmax((ys - cy) ** 2 + (xs - cx) ** 2)
        ey, ex = (cy + ys[far]) // 2, (cx + xs[far]) // 2
        draw.line([(int(cx), int(cy)), (int(ex), int(ey))], fill=obj['class_index'], width=2)
        line = np.asarray(canvas) == obj['class_index']
        scribble[line & inside] = obj['class_index']
    if background.any():
        by, bx = _interior_point(background, depth)
        bg_canvas = Image.new('L', (w, h), 0)
        ImageDraw.Draw(bg_canvas).line([(int(bx) - w // 8, int(by)), (int(bx) + w // 8, int(by))], fill=1, width=2)
        scribble[(np.asarray(bg_canvas) > 0) & background] = 0
    seeds['SEAM_Scribble'] = scribble

    grown = np.full((h, w), IGNORE_LABEL, np.uint8)
    for segment in np.unique(hed[scribble != IGNORE_LABEL]):
        labels = scribble[(hed == segment) & (scribble != IGNORE_LABEL)]
        grown[hed == segment] = np.bincount(labels).argmax()
    seeds['Scribble_SuperPixel'] = grown

    points = np.full((h, w), IGNORE_LABEL, np.uint8)
    for obj in sample['objects']:
        points[_disc_mask((h, w), [_interior_point(instance_map == obj['instance'], depth)], 2)
               & (instance_map == obj['instance'])] = obj['class_index']
    bg_candidates = np.argwhere(background)
    if len(bg_candidates):
        picks = bg_candidates[rng.choice(len(bg_candidates), min(2, len(bg_candidates)), replace=False)]
        points[_disc_mask((h, w), [tuple(p) for p in picks], 2) & background] = 0
    seeds['SEAM_Point'] = points

    # SEAM's confident seeds keep the top 40% of each object's CAM, which peaks in the object's interior: keep the
    # 40% of the object's pixels farthest from its border (a partial core, as the original's seeds are), not a thin
    # erosion that would leave nearly complete ground truth no propagation method could improve on.
    image_seed = np.full((h, w), IGNORE_LABEL, np.uint8)
    image_seed[ndimage.binary_erosion(instance_map == 0, iterations=6)] = 0
    for obj in sample['objects']:
        image_seed[_object_core(instance_map == obj['instance'])] = obj['class_index']
    seeds['SEAM_Image'] = image_seed
    return seeds


def _voc_splits(num_images):
    """Indices of (val, VOC-seg train, SBD-only) images: ~20% / ~30% / rest, at least one val and one train."""
    if num_images < 2:
        raise ValueError(f'--num_images: the voc layout needs at least 2 images, got {num_images}')
    n_val = max(1, int(round(0.2 * num_images)))
    n_train = max(1, int(round(0.3 * num_images)))
    n_train = min(n_train, num_images - n_val)
    order = list(range(num_images))
    return order[:n_val], order[n_val:n_val + n_train], order[n_val + n_train:]


def _generate_voc(out_dir, num_images, seed, height, width, void_width, jpeg_quality, progress, classes=None):
    from common.data.cls_labels import save_cls_labels
    from common.data.lists import write_image_list

    voc_root = os.path.join(out_dir, 'VOCdevkit')
    voc = os.path.join(voc_root, 'VOC2012')
    sbd = os.path.join(voc_root, 'sbd', 'dataset', 'clsimg')
    val_idx, train_idx, sbd_idx = _voc_splits(num_images)
    sbd_set = set(sbd_idx)
    palette = voc_colormap()
    cls_labels = {}
    stats = _Stats(len(VOC_CLASS_NAMES))
    seed_pixels = {name: [0, 0] for name in SEED_FOLDERS}
    for index in _progress(range(num_images), progress, 'voc'):
        sample = make_voc_sample(seed, index, height, width, void_width, jpeg_quality, classes)
        image_id = sample['id']
        h, w = sample['class_map'].shape
        is_sbd = index in sbd_set
        ringed = sample['class_map'].copy()
        ringed[sample['ring']] = IGNORE_LABEL
        instances = sample['instance_map'].copy()
        instances[sample['ring']] = IGNORE_LABEL
        atomic_write_bytes(os.path.join(voc, 'JPEGImages', image_id + '.jpg'), sample['jpeg'])
        atomic_write_bytes(os.path.join(voc, 'Annotations', image_id + '.xml'),
                            voc_annotation_xml(image_id, h, w, sample['objects'], not is_sbd).encode())
        save_png(os.path.join(voc, 'hed', image_id + '.png'), sample['hed'], 'L')
        if is_sbd:  # SBD masks have no void ring
            save_png(os.path.join(sbd, image_id + '.png'), sample['class_map'], 'L')
            save_png(os.path.join(voc, 'SegmentationClassAug', image_id + '.png'), sample['class_map'], 'P', palette)
        else:
            save_png(os.path.join(voc, 'segcls', image_id + '.png'), ringed, 'L')
            save_png(os.path.join(voc, 'SegmentationClass', image_id + '.png'), ringed, 'P', palette)
            save_png(os.path.join(voc, 'SegmentationObject', image_id + '.png'), instances, 'P', palette)
            save_png(os.path.join(voc, 'SegmentationClassAug', image_id + '.png'), ringed, 'P', palette)
        if index not in val_idx:
            for name, seed_map in make_seeds(sample, sample['rng']).items():
                save_png(os.path.join(out_dir, 'data', 'Init_Label', name, image_id + '.png'), seed_map, 'L')
                seed_pixels[name][0] += int(np.sum(seed_map != IGNORE_LABEL))
                seed_pixels[name][1] += seed_map.size
        label = np.zeros(20, np.float32)
        for obj in sample['objects']:
            label[obj['class_index'] - 1] = 1.0
        cls_labels[image_id] = label
        stats.add(ringed if not is_sbd else sample['class_map'], len(sample['objects']), (h, w))

    def ids(indices):
        return [voc_image_id(i) for i in indices]

    def aaf_row(image_id):
        mask = (f'sbd/dataset/clsimg/{image_id}.png' if image_id in sbd_ids
                else f'VOC2012/segcls/{image_id}.png')
        return f'VOC2012/JPEGImages/{image_id}.jpg', mask

    def psa_row(image_id):
        return f'/JPEGImages/{image_id}.jpg', f'/SegmentationClassAug/{image_id}.png'

    sbd_ids = set(ids(sbd_idx))
    train_aug = ids(train_idx) + ids(sbd_idx)
    aaf_lists = os.path.join(out_dir, 'dataset', 'voc12')
    psa_lists = os.path.join(out_dir, 'voc12')
    # The download's id files, for `python -m common.data.datasets`: VOC ImageSets, and SBD train/val lists that
    # (like the real ones) also hold VOC ids and, here, one duplicate; the list writer must drop those.
    sets = os.path.join(voc, 'ImageSets', 'Segmentation')
    write_image_list(os.path.join(sets, 'train.txt'), ids(train_idx))
    write_image_list(os.path.join(sets, 'val.txt'), ids(val_idx))
    sbd_ids_ordered = ids(sbd_idx)
    half = len(sbd_ids_ordered) // 2
    sbd_lists = os.path.join(voc_root, 'sbd', 'dataset')
    write_image_list(os.path.join(sbd_lists, 'train.txt'), sbd_ids_ordered[:half] + ids(train_idx)[:1])
    write_image_list(os.path.join(sbd_lists, 'val.txt'),
                     ids(val_idx)[:1] + sbd_ids_ordered[half:] + sbd_ids_ordered[:1])
    write_image_list(os.path.join(aaf_lists, 'train+.txt'), [aaf_row(i) for i in train_aug])
    write_image_list(os.path.join(aaf_lists, 'train.txt'), [aaf_row(i) for i in ids(train_idx)])
    write_image_list(os.path.join(aaf_lists, 'val.txt'), [aaf_row(i) for i in ids(val_idx)])
    write_image_list(os.path.join(psa_lists, 'train_aug.txt'), [psa_row(i) for i in train_aug])
    write_image_list(os.path.join(psa_lists, 'train.txt'), [psa_row(i) for i in ids(train_idx)])
    write_image_list(os.path.join(psa_lists, 'val.txt'), [psa_row(i) for i in ids(val_idx)])
    # key order of the original make_cls_labels: train_aug ids, then val ids
    save_cls_labels({i: cls_labels[i] for i in train_aug + ids(val_idx)}, os.path.join(psa_lists, 'cls_labels.npy'))

    summary = stats.summary(VOC_CLASS_NAMES)
    summary.update({
        'layout': 'voc', 'out_dir': out_dir, 'data_dir': voc_root + os.sep, 'voc12_root': voc,
        'splits': {'train+': len(train_aug), 'train': len(train_idx), 'val': len(val_idx), 'sbd_only': len(sbd_idx)},
        'lists': {'aaf': {k: os.path.join(aaf_lists, k + '.txt') for k in ('train+', 'train', 'val')},
                  'psa': {k: os.path.join(psa_lists, k + '.txt') for k in ('train_aug', 'train', 'val')}},
        'cls_labels': os.path.join(psa_lists, 'cls_labels.npy'),
        'seed_dirs': {k: os.path.join(out_dir, 'data', 'Init_Label', k) for k in SEED_FOLDERS},
        'seed_labelled_fraction': {k: v[0] / max(1, v[1]) for k, v in seed_pixels.items()},
    })
    return summary


# ----------------------------------------------------------------------------------------------------------------
# Cityscapes / GTA5 street scenes

def _cityscapes_label_colors():
    """Base colour per Cityscapes labelId: the trainId colour, dark greys for ignored ids."""
    colors = {}
    for label_id, train_id in CITYSCAPES_LABELID_TO_TRAINID.items():
        if train_id == IGNORE_LABEL:
            colors[label_id] = (20 + 4 * label_id,) * 3
        else:
            colors[label_id] = CITYSCAPES_TRAINID_COLORS[train_id]
    return colors


def make_street_sample(seed, index, height=128, width=256):
    """One synthetic street scene (pure: depends on (seed, index) only).

    Returns:
      dict with 'image' (uint8 [H,W,3], JPEG-roughened), 'label_ids' (uint8 Cityscapes labelIds),
      'instance_ids' (uint16 [H,W]: labelId*1000+k for instance classes, else labelId), 'train_ids' (uint8).
    """
    rng = np.random.default_rng([int(seed), int(index), 0xC17])
    h, w = int(height), int(width)
    label = np.full((h, w), 23, np.uint8)  # sky
    instance = np.zeros((h, w), np.int32)
    horizon = int(rng.uniform(0.38, 0.52) * h)
    canvas = Image.fromarray(label)
    draw = ImageDraw.Draw(canvas)
    x = 0
    while x < w:  # buildings (11) along the horizon, some walls (12)
        bw = int(rng.uniform(0.1, 0.3) * w)
        top = int(rng.uniform(0.05, 0.8) * horizon)
        draw.rectangle([x, top, x + bw, horizon + 2], fill=11 if rng.uniform() < 0.85 else 12)
        x += bw + int(rng.integers(0, max(2, w // 20)))
    for _ in range(int(rng.integers(1, 4))):  # vegetation (21)
        cx, cy = rng.uniform(0, w), horizon - rng.uniform(0, 0.3) * h
        r = rng.uniform(0.06, 0.15) * w
        draw.ellipse([cx - r, cy - r * 0.8, cx + r, cy + r * 0.8], fill=21)
    draw.rectangle([0, horizon, w, h], fill=8)  # sidewalk (8) everywhere below, road trapezoid on top
    vx = rng.uniform(0.35, 0.65) * w
    draw.polygon([(vx - 0.05 * w, horizon), (vx + 0.05 * w, horizon), (w * 1.1, h), (-0.1 * w, h)], fill=7)
    if rng.uniform() < 0.5:  # terrain patch (22)
        draw.polygon([(0, horizon + 0.1 * h), (0.15 * w, horizon + 0.1 * h), (0, 0.8 * h)], fill=22)
    if rng.uniform() < 0.5:  # fence (13)
        fx = rng.uniform(0.6, 0.9) * w
        draw.rectangle([fx, horizon - 0.08 * h, w, horizon + 0.04 * h], fill=13)
    for _ in range(int(rng.integers(1, 3))):  # poles (17) with signs (20) / lights (19)
        px = rng.uniform(0.02, 0.98) * w
        draw.rectangle([px, 0.15 * h, px + max(2, 0.01 * w), horizon + 0.15 * h], fill=17)
        draw.rectangle([px - 0.02 * w, 0.15 * h, px + 0.03 * w, 0.22 * h], fill=20 if rng.uniform() < 0.5 else 19)
    label = np.asarray(canvas).copy()
    ego = int(0.06 * h)  # ego vehicle (1) in the bottom rows, ignored (trainId 255) like the real data
    label[h - ego:] = 1

    counters = {}
    things = [(26, 0.55), (24, 0.2), (33, 0.08), (27, 0.05), (28, 0.04), (25, 0.04), (32, 0.02), (31, 0.02)]
    ids, probs = zip(*things)
    for _ in range(int(rng.integers(2, 6))):
        label_id = int(rng.choice(ids, p=np.array(probs) / sum(probs)))
        y_bottom = rng.uniform(horizon + 0.1 * h, h - ego)
        scale = (y_bottom - horizon) / (h - horizon)
        if label_id in (24, 25):
            bh, bw = 0.35 * h * scale + 4, 0.05 * w * scale + 2
        elif label_id in (32, 33):
            bh, bw = 0.15 * h * scale + 3, 0.08 * w * scale + 3
        else:
            bh, bw = 0.22 * h * scale + 4, 0.18 * w * scale + 4
        cx = rng.uniform(0.05, 0.95) * w
        mask_img = Image.new('L', (w, h), 0)
        mdraw = ImageDraw.Draw(mask_img)
        if label_id in (24, 25):
            mdraw.ellipse([cx - bw / 2, y_bottom - bh, cx + bw / 2, y_bottom], fill=1)
        else:
            mdraw.rectangle([cx - bw / 2, y_bottom - bh, cx + bw / 2, y_bottom - bh * 0.2], fill=1)
            mdraw.ellipse([cx - bw / 2, y_bottom - bh * 0.35, cx - bw / 6, y_bottom], fill=1)
            mdraw.ellipse([cx + bw / 6, y_bottom - bh * 0.35, cx + bw / 2, y_bottom], fill=1)
        mask = np.asarray(mask_img) > 0
        mask[h - ego:] = False
        if mask.sum() < 6:
            continue
        counters[label_id] = counters.get(label_id, -1) + 1
        label[mask] = label_id
        instance[mask] = label_id * 1000 + counters[label_id]
    stuff = instance == 0
    instance[stuff] = label[stuff]

    colors = _cityscapes_label_colors()
    img = _background(rng, h, w) * 0.3
    for label_id in np.unique(label):
        mask = label == label_id
        pattern_class = (int(label_id) % 20) + 1
        texture = class_texture(pattern_class, h, w, tuple(int(p) for p in rng.integers(0, 16, 2)))
        values = np.asarray(colors[int(label_id)], np.float32) * 0.7 + 0.6 * TEXTURE_AMPLITUDE * texture[..., None]
        img[mask] += values[mask]
    rgb = _jpeg_roundtrip(_finish_image(img, rng), 92)
    return {'image': rgb, 'label_ids': label, 'instance_ids': instance.astype(np.uint16),
            'train_ids': cityscapes_label_lut()[label]}


def cityscapes_name(split, index):
    """(city, `<city>_<seq>_<frame>`) of synthetic Cityscapes image `index` in `split`."""
    cities = CITYSCAPES_TRAIN_CITIES if split == 'train' else CITYSCAPES_VAL_CITIES
    city = cities[index % len(cities)]
    return city, f'{city}_{index:06d}_000019'


def _generate_cityscapes(out_dir, num_images, seed, height, width, progress):
    from common.data.lists import write_image_list

    if num_images < 2:
        raise ValueError(f'--num_images: the cityscapes layout needs at least 2 images, got {num_images}')
    root = os.path.join(out_dir, 'Cityscapes')
    n_val = max(1, int(round(0.25 * num_images)))
    rows = {'train': [], 'val': []}
    stats = _Stats(len(CITYSCAPES_CLASS_NAMES))
    for index in _progress(range(num_images), progress, 'cityscapes'):
        split = 'val' if index < n_val else 'train'
        city, name = cityscapes_name(split, index)
        sample = make_street_sample(seed, index, height or 128, width or 256)
        save_png(os.path.join(root, 'leftImg8bit', split, city, name + '_leftImg8bit.png'), sample['image'], 'RGB')
        save_png(os.path.join(root, 'gtFine', split, city, name + '_gtFine_labelIds.png'), sample['label_ids'], 'L')
        save_png(os.path.join(root, 'gtFine', split, city, name + '_gtFine_instanceIds.png'),
                 sample['instance_ids'], 'I;16')
        for folder in (city, 'all'):
            save_png(os.path.join(root, 'gtFineId', split, folder, name + '_gtFineId_labelIds.png'),
                     sample['train_ids'], 'L')
        rows[split].append((f'leftImg8bit/{split}/{city}/{name}_leftImg8bit.png',
                            f'gtFineId/{split}/{city}/{name}_gtFineId_labelIds.png'))
        stats.add(sample['train_ids'], len(np.unique(sample['instance_ids'][sample['instance_ids'] >= 1000])),
                  sample['train_ids'].shape)
    lists = os.path.join(out_dir, 'dataset', 'cityscapes')
    for split in ('train', 'val'):  # sorted like a listing of the real folders
        write_image_list(os.path.join(lists, split + '.txt'), sorted(rows[split]))
    summary = stats.summary(CITYSCAPES_CLASS_NAMES)
    summary.update({'layout': 'cityscapes', 'out_dir': out_dir, 'data_dir': root + os.sep,
                    'splits': {k: len(v) for k, v in rows.items()},
                    'lists': {k: os.path.join(lists, k + '.txt') for k in rows},
                    'gt_dir_val': os.path.join(root, 'gtFineId', 'val', 'all')})
    return summary


def _generate_gta5(out_dir, num_images, seed, height, width, progress):
    from common.data.lists import write_image_list

    if num_images < 1:
        raise ValueError(f'--num_images: must be >= 1, got {num_images}')
    root = os.path.join(out_dir, 'GTA5')
    # GTA5 labels are palette PNGs whose indices are Cityscapes labelIds, coloured like their trainIds
    palette = cityscapes_colormap()[cityscapes_label_lut()]
    rows = []
    stats = _Stats(len(CITYSCAPES_CLASS_NAMES))
    for index in _progress(range(num_images), progress, 'gta5'):
        name = f'{index + 1:05d}'
        sample = make_street_sample(seed + 7, index, height or 120, width or 216)
        save_png(os.path.join(root, 'images', name + '.png'), sample['image'], 'RGB')
        save_png(os.path.join(root, 'labels', name + '.png'), sample['label_ids'], 'P', palette)
        rows.append((f'images/{name}.png', f'labels/{name}.png'))
        stats.add(sample['train_ids'], len(np.unique(sample['instance_ids'][sample['instance_ids'] >= 1000])),
                  sample['train_ids'].shape)
    list_path = os.path.join(out_dir, 'dataset', 'gta5', 'train.txt')
    write_image_list(list_path, rows)
    summary = stats.summary(CITYSCAPES_CLASS_NAMES)
    summary.update({'layout': 'gta5', 'out_dir': out_dir, 'data_dir': root + os.sep, 'splits': {'train': len(rows)},
                    'lists': {'train': list_path}, 'label_encoding': 'Cityscapes labelIds'})
    return summary


# ----------------------------------------------------------------------------------------------------------------
# Statistics, API, CLI

class _Stats:
    def __init__(self, num_classes):
        self.num_classes = num_classes
        self.counts = np.zeros(num_classes, np.int64)
        self.ignored = 0
        self.total = 0
        self.objects = []
        self.sizes = []

    def add(self, label, num_objects, size):
        valid = label[label < self.num_classes]
        self.counts += np.bincount(valid.ravel(), minlength=self.num_classes)[:self.num_classes]
        self.ignored += int(np.sum(label == IGNORE_LABEL))
        self.total += label.size
        self.objects.append(int(num_objects))
        self.sizes.append(tuple(int(s) for s in size))

    def summary(self, class_names):
        labelled = max(1, int(self.counts.sum()))
        hist = np.bincount(self.objects) if self.objects else np.zeros(1, np.int64)
        heights, widths = zip(*self.sizes) if self.sizes else ((0,), (0,))
        return {
            'num_images': len(self.objects),
            'class_pixel_frequency': {name: float(c) / labelled for name, c in zip(class_names, self.counts)},
            'ignored_pixel_fraction': self.ignored / max(1, self.total),
            'objects_per_image': {'mean': float(np.mean(self.objects)) if self.objects else 0.0,
                                  'histogram': {int(k): int(v) for k, v in enumerate(hist) if v}},
            'image_size': {'height': [int(min(heights)), int(max(heights))],
                           'width': [int(min(widths)), int(max(widths))]},
        }


def _progress(iterable, enabled, desc):
    if not enabled:
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, desc=f'synthetic {desc}', unit='img')


def generate(layout, out_dir, num_images, seed=0, height=None, width=None, void_width=3, jpeg_quality=90,
             progress=False, classes=None):
    """Writes a synthetic data set in a real on-disk layout.

    Args:
      layout: 'voc', 'cityscapes' or 'gta5' (see the module docstring for the files written).
      out_dir: output root (created).
      num_images: number of images (voc/cityscapes: >= 2, split into train/val).
      seed: data set seed; image i depends on (seed, i) only.
      height, width: fixed image size; None = VOC: random 96..160 per image; Cityscapes 128x256; GTA5 120x216.
      void_width: VOC void ring window (0 = no ring).
      jpeg_quality: VOC JPEG quality.
      progress: show a tqdm bar.
      classes: VOC only: optional VOC class ids (1..20, at least 2 distinct) to draw the objects from, e.g. a few
        classes so that a small set has many examples of each; None = all 20 (output unchanged).
    Returns:
      summary dict: layout, paths (data_dir, lists, ...), split sizes, num_images, class_pixel_frequency,
      ignored_pixel_fraction, objects_per_image, image_size.
    """
    if layout not in LAYOUTS:
        raise ValueError(f'--layout: unknown layout {layout!r}; choose one of {", ".join(LAYOUTS)}')
    if int(num_images) < 1:
        raise ValueError(f'--num_images: must be >= 1, got {num_images}')
    for flag, value in (('height', height), ('width', width)):
        if value is not None and int(value) < 16:
            raise ValueError(f'--{flag}: must be >= 16 pixels, got {value}')
    classes = _check_classes(classes)
    if classes is not None and layout != 'voc':
        raise ValueError(f'--classes: only for the voc layout, got layout {layout!r}')
    out_dir = check_writable_dir(os.path.abspath(out_dir), '--out')
    if layout == 'voc':
        return _generate_voc(out_dir, int(num_images), int(seed), height, width, void_width, jpeg_quality, progress,
                             classes)
    if layout == 'cityscapes':
        return _generate_cityscapes(out_dir, int(num_images), int(seed), height, width, progress)
    return _generate_gta5(out_dir, int(num_images), int(seed), height, width, progress)


def format_stats(summary):
    """Human-readable statistics of a `generate` summary."""
    lines = [f"layout {summary['layout']}: {summary['num_images']} images in {summary['out_dir']}",
             f"splits: {summary['splits']}",
             f"image size: H {summary['image_size']['height']} W {summary['image_size']['width']}",
             f"objects per image: mean {summary['objects_per_image']['mean']:.2f} "
             f"histogram {summary['objects_per_image']['histogram']}",
             f"ignored (255) pixel fraction: {summary['ignored_pixel_fraction']:.3f}",
             'class pixel frequency (of labelled pixels):']
    for name, freq in summary['class_pixel_frequency'].items():
        lines.append(f'  {name:14s} {freq:.4f}')
    if 'seed_labelled_fraction' in summary:
        lines.append('A2GNN seed labelled fraction: ' + ', '.join(
            f'{k} {v:.3f}' for k, v in summary['seed_labelled_fraction'].items()))
    return '\n'.join(lines)


def _define_flags(flag_values=None):
    from absl import flags
    fv = flags.FLAGS if flag_values is None else flag_values
    if 'layout' in fv:
        return
    flags.DEFINE_enum('layout', 'voc', list(LAYOUTS), 'On-disk layout to write.', flag_values=fv)
    flags.DEFINE_string('out', None, 'Output root directory.', flag_values=fv)
    flags.DEFINE_integer('num_images', 100, 'Number of images.', flag_values=fv)
    flags.DEFINE_integer('seed', 0, 'Data set seed.', flag_values=fv)
    flags.DEFINE_integer('height', None, 'Fixed image height (default: layout-specific).', flag_values=fv)
    flags.DEFINE_integer('width', None, 'Fixed image width (default: layout-specific).', flag_values=fv)
    flags.DEFINE_integer('void_width', 3, 'VOC void-ring window size (0 = no ring).', flag_values=fv)
    flags.DEFINE_integer('jpeg_quality', 90, 'VOC JPEG quality.', flag_values=fv)
    flags.DEFINE_boolean('stats', True, 'Print statistics (images, class pixel frequencies, objects per image).',
                         flag_values=fv)
    flags.DEFINE_string('summary_json', None, 'Also write the summary dict as JSON to this file.', flag_values=fv)


def main(argv, flag_values=None):
    """absl main; `flag_values` (default absl.flags.FLAGS) must hold the flags of `_define_flags`."""
    from absl import app, flags
    del argv
    FLAGS = flags.FLAGS if flag_values is None else flag_values
    if not FLAGS.out:
        raise app.UsageError('--out: required (output root directory)')
    summary = generate(FLAGS.layout, FLAGS.out, FLAGS.num_images, FLAGS.seed, FLAGS.height, FLAGS.width,
                       FLAGS.void_width, FLAGS.jpeg_quality, progress=True)
    if FLAGS.stats:
        print(format_stats(summary))
    if FLAGS.summary_json:
        atomic_write_bytes(FLAGS.summary_json, json.dumps(summary, indent=1).encode())


def run():
    """Console-script entry point (`affinity-seg-synthetic`)."""
    from common.cli import run_app
    _define_flags()
    run_app(main)


if __name__ == '__main__':
    run()
