"""A2GNN losses: the gated affinity network's loss (`train_gated_aff.py`), the GNN's bg/fg split cross-entropy
and the box losses (`mytool.py`). Channels-last layouts throughout."""
import numpy as np
import tensorflow as tf

from a2gnn.gated_crf import gated_crf_regularizer
from a2gnn.gnn_kernel import resolve_impl, split_cross_entropy_sums
from a2gnn.ops import unfold

IGNORE_LABEL = 255
GATED_CRF_KERNELS = ({'weight': 1, 'xy': 6, 'rgb': 0.1},)  # every gated CRF of A2GNN uses this kernel
VOC_CLASS_IDS = {'aeroplane': 1, 'bicycle': 2, 'bird': 3, 'boat': 4, 'bottle': 5, 'bus': 6, 'car': 7, 'cat': 8,
                 'chair': 9, 'cow': 10, 'diningtable': 11, 'dog': 12, 'horse': 13, 'motorbike': 14, 'person': 15,
                 'pottedplant': 16, 'sheep': 17, 'sofa': 18, 'train': 19, 'tvmonitor': 20}


def _linear_taps(in_size, out_size):
    """Source indices and float32 weights of align_corners=False linear resizing, as torch computes them: the
    float32 scale in/out, the source coordinate scale * (i + 0.5) - 0.5 evaluated in double (the C++ literal 0.5)
    and stored as float32, the weights float32 (lambda1 = source - index0, lambda0 = 1 - lambda1)."""
    ratio = np.float64(np.float32(in_size) / np.float32(out_size))
    source = np.maximum(ratio * (np.arange(out_size) + 0.5) - 0.5, 0.0).astype(np.float32)
    index0 = np.minimum(source.astype(np.int64), in_size - 1)
    index1 = index0 + (index0 < in_size - 1)
    lambda1 = np.clip(source - index0.astype(np.float32), 0.0, 1.0).astype(np.float32)
    return index0, index1, np.float32(1.0) - lambda1, lambda1


def resize_bilinear(x, size):
    """torch `F.interpolate(x, size, mode='bilinear', align_corners=False)` on [N, H, W, C]: four float32 tap
    weights h * w summed i00 w00 + (i01 w01 + (i10 w10 + i11 w11)) like torch's channels-last kernel
    (tf.image.resize differs by several ulp at fractional scales)."""
    x = tf.convert_to_tensor(x, tf.float32)
    out_h, out_w = (int(s) for s in size)
    in_h, in_w = int(x.shape[1]), int(x.shape[2])
    if (in_h, in_w) == (out_h, out_w):
        return x
    h0, h1, hl0, hl1 = _linear_taps(in_h, out_h)
    w0, w1, wl0, wl1 = _linear_taps(in_w, out_w)

    def weight(hl, wl):
        return (hl[:, None] * wl[None, :])[..., None]  # float32 products, as torch's channels-last kernel

    def tap(rows, cols):
        return tf.gather(tf.gather(x, rows, axis=1), cols, axis=2)

    return (tap(h0, w0) * weight(hl0, wl0)
            + (tap(h0, w1) * weight(hl0, wl1) + (tap(h1, w0) * weight(hl1, wl0) + tap(h1, w1) * weight(hl1, wl1))))


def gated_affinity_loss(aff, aff_crf, label, croppings, img, radius, kernels_desc=GATED_CRF_KERNELS, crf_weight=3):
    """Loss of one `train_gated_aff.py` step: bg/4 + fg/4 + neg/2 + crf_weight * gated CRF regulariser.

    Args:
      aff, aff_crf: [N, H, W, d, d] outputs of `a2gnn.affinity.gated_affinity`.
      label: [N, H, W] seed labels at feature resolution (0 bg, 1..20, 255 unlabelled or crop padding).
      croppings: [N, H, W] 1 inside the image, 0 on crop padding.
      img: [N, 8H, 8W, 3] normalised image (bilinearly resized to H x W for the CRF kernel).
      radius: window radius r.
    Returns:
      dict: loss, bg_loss, fg_loss, neg_loss, crf_loss (already x crf_weight), bg_count / fg_count / neg_count
      (pair counts + 1e-5), the bool masks bg_pos_label_need / fg_pos_label_need / neg_label_need and the CRF
      mask crf_mask ([N, H, W, 1, d, d]), crf_img ([N, H, W, 3]).
    """
    aff = tf.convert_to_tensor(aff, tf.float32)[:, :, :, None]  # [N, H, W, 1, d, d]
    aff_crf = tf.convert_to_tensor(aff_crf, tf.float32)
    label = tf.convert_to_tensor(label, tf.float32)
    height, width = int(label.shape[1]), int(label.shape[2])
    # Zero padding: out-of-bounds neighbours carry label 0 (background), as in the original's unfold.
    neighbours = unfold(label[..., None], radius)
    centre = label[:, :, :, None, None, None]
    same = tf.equal(neighbours, centre)
    ignored = tf.equal(neighbours, IGNORE_LABEL)
    centre_ignored = tf.equal(centre, IGNORE_LABEL)
    bg_need = same & tf.equal(centre, 0) & ~ignored
    fg_need = same & ~tf.equal(centre, 0) & ~ignored & ~centre_ignored
    neg_need = ~same & ~ignored & ~centre_ignored

    def count(mask):
        return tf.reduce_sum(tf.cast(mask, tf.float32)) + 1e-5

    bg_count, fg_count, neg_count = count(bg_need), count(fg_need), count(neg_need)
    log_aff = tf.math.log(aff + 1e-5)
    bg_loss = tf.reduce_sum(-tf.cast(bg_need, tf.float32) * log_aff) / bg_count
    fg_loss = tf.reduce_sum(-tf.cast(fg_need, tf.float32) * log_aff) / fg_count
    neg_loss = tf.reduce_sum(-tf.cast(neg_need, tf.float32) * tf.math.log(1. + 1e-5 - aff)) / neg_count

    crop = tf.convert_to_tensor(croppings, tf.float32)[..., None]
    crop_neighbours = unfold(crop, radius)
    crf_mask = tf.cast(~tf.equal(crop_neighbours, 0) & ~tf.equal(crop[:, :, :, :, None, None], 0), tf.float32)
    crf_img = resize_bilinear(img, (height, width))
    crf_loss = crf_weight * gated_crf_regularizer(aff_crf, list(kernels_desc), radius, {'rgb': crf_img}, height,
                                                  width, mask_src=crf_mask)['loss']
    loss = bg_loss / 4 + fg_loss / 4 + neg_loss / 2 + crf_loss
    return {'loss': loss, 'bg_loss': bg_loss, 'fg_loss': fg_loss, 'neg_loss': neg_loss, 'crf_loss': crf_loss,
            'bg_count': bg_count, 'fg_count': fg_count, 'neg_count': neg_count,
            'bg_pos_label_need': bg_need, 'fg_pos_label_need': fg_need, 'neg_label_need': neg_need,
            'crf_mask': crf_mask, 'crf_img': crf_img}


def masked_cross_entropy(logits, labels, reduction='mean'):
    """torch `CrossEntropyLoss(ignore_index=255)` on [..., C] logits and [...] labels.

    'mean' divides by the number of labelled pixels; with none the term is 0 (the original gives NaN, which then
    poisons the whole model: the guard the A2GNN issue asks for). 'sum' sums the labelled pixels.
    """
    logits = tf.convert_to_tensor(logits, tf.float32)
    labels = tf.cast(tf.convert_to_tensor(labels), tf.int32)
    valid = tf.not_equal(labels, IGNORE_LABEL)
    safe = tf.where(valid, labels, tf.zeros_like(labels))
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe, logits=logits)
    total = tf.reduce_sum(tf.where(valid, ce, tf.zeros_like(ce)))
    if reduction == 'sum':
        return total
    return total / tf.maximum(tf.reduce_sum(tf.cast(valid, tf.float32)), 1.0)


def split_seed(seed):
    """(bg_label, fg_label): the seed with every non-0 pixel set to 255, and with every 0 pixel set to 255."""
    seed = tf.convert_to_tensor(seed)
    ignore = tf.cast(IGNORE_LABEL, seed.dtype)
    return tf.where(tf.equal(seed, 0), seed, ignore), tf.where(tf.equal(seed, 0), ignore, seed)


def _tap_pairs(in_size, out_size):
    """`_linear_taps` as (index int32 [out_size, 2], weight float32 [out_size, 2]) for the compiled kernel."""
    index0, index1, lambda0, lambda1 = _linear_taps(in_size, out_size)
    return (np.stack([index0, index1], axis=1).astype(np.int32),
            np.stack([lambda0, lambda1], axis=1).astype(np.float32))


def interpolation_matrix(in_size, out_size):
    """float32 [out_size, in_size] matrix of align_corners=False linear resizing (`_linear_taps` weights)."""
    index0, index1, lambda0, lambda1 = _linear_taps(in_size, out_size)
    matrix = np.zeros((out_size, in_size), np.float64)
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, index0), lambda0)
    np.add.at(matrix, (rows, index1), lambda1)
    return matrix.astype(np.float32)


def node_logits_to_image(x, f_h, f_w, size):
    """Node-major GNN output [f_h*f_w, C] -> [1, f_h, f_w, C] -> bilinear to `size` (align_corners=False).

    Separable: two small matmuls with the interpolation matrices (columns first, then rows, as torch's kernel),
    so the backward pass is two matmuls too (the gather form's gradient scatters four full-size tensors)."""
    height, width = (int(s) for s in size)
    columns = _resize_columns(x, f_h, f_w, width)
    return tf.reshape(tf.matmul(interpolation_matrix(f_h, height), columns), (1, height, width, -1))


def _resize_columns(x, f_h, f_w, width):
    """First half of `node_logits_to_image`: node logits [f_h*f_w, C] resized along x -> [f_h, width*C]."""
    x = tf.reshape(tf.convert_to_tensor(x, tf.float32), (f_h, f_w, -1))
    num_class = int(x.shape[-1])
    columns = tf.matmul(tf.transpose(x, (0, 2, 1)), interpolation_matrix(f_w, width), transpose_b=True)
    return tf.reshape(tf.transpose(columns, (0, 2, 1)), (f_h, width * num_class))


def split_ce_from_pred(pred, seed):
    """(bg_loss, fg_loss) of pred [1, H, W, C] against the bg-only and fg-only halves of seed [1, H, W].

    The two halves label disjoint pixels, so one cross-entropy over the seed serves both (the original runs the
    criterion twice over the full-resolution prediction); each term is averaged over its own pixels, an empty
    term is 0 (as `masked_cross_entropy`)."""
    seed = tf.convert_to_tensor(seed)
    labels = tf.cast(seed, tf.int32)
    background = tf.equal(labels, 0)
    foreground = tf.logical_and(~background, tf.not_equal(labels, IGNORE_LABEL))
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.where(foreground, labels, tf.zeros_like(labels)), logits=tf.convert_to_tensor(pred, tf.float32))

    def term(mask):
        total = tf.reduce_sum(tf.where(mask, ce, tf.zeros_like(ce)))
        return total / tf.maximum(tf.reduce_sum(tf.cast(mask, tf.float32)), 1.0)

    return term(background), term(foreground)


def split_ce_from_nodes(x, seed, f_h, f_w, chunk_rows=64, impl='auto'):
    """`split_ce_from_pred(node_logits_to_image(x, ...), seed)` without the full-resolution prediction.

    The per-image trainer's form. impl 'kernel': the compiled CPU op of `a2gnn.gnn_kernel` (each labelled pixel's
    logits interpolated from its 4 nodes on the fly, unlabelled pixels skipped); 'tf': the TensorFlow form below;
    'auto': the kernel on CPU when it builds. TensorFlow form: the prediction, its softmax and its gradient exist
    `chunk_rows` image rows at a time (forward: the two sums; backward: the rows recomputed and their gradient
    pulled back through the row interpolation), instead of several [1, H, W, C] tensors. Same values as the whole-
    image form up to the summation order.

    Args:
      x: [f_h*f_w, C] node logits; seed: [1, H, W] int seed; chunk_rows: image rows per chunk (TensorFlow form).
    Returns:
      (bg_loss, fg_loss).
    """
    seed = tf.convert_to_tensor(seed)
    height, width = int(seed.shape[1]), int(seed.shape[2])
    labels = tf.cast(seed[0], tf.int32)
    if resolve_impl(impl) == 'kernel':  # the op also counts the pixels of each term
        x = tf.reshape(tf.convert_to_tensor(x, tf.float32), (f_h, f_w, -1))
        sums, counts = split_cross_entropy_sums(x, labels, _tap_pairs(f_h, height), _tap_pairs(f_w, width))
        counts = tf.maximum(counts, 1.0)
        return sums[0] / counts[0], sums[1] / counts[1]
    background = tf.equal(labels, 0)
    foreground = tf.logical_and(~background, tf.not_equal(labels, IGNORE_LABEL))
    bg_count = tf.maximum(tf.reduce_sum(tf.cast(background, tf.float32)), 1.0)
    fg_count = tf.maximum(tf.reduce_sum(tf.cast(foreground, tf.float32)), 1.0)
    safe_labels = tf.where(foreground, labels, tf.zeros_like(labels))
    row_matrix = interpolation_matrix(f_h, height)
    chunks = [slice(start, min(start + chunk_rows, height)) for start in range(0, height, chunk_rows)]

    def chunk_logits(columns, rows):
        return tf.reshape(tf.matmul(row_matrix[rows], columns), (-1, width, int(columns.shape[1]) // width))

    @tf.custom_gradient
    def losses(columns):
        bg_total, fg_total, previous = 0.0, 0.0, []
        for rows in chunks:
            with tf.control_dependencies(previous):  # one chunk after the other: bounded temporaries
                ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe_labels[rows],
                                                                    logits=chunk_logits(columns, rows))
                bg_total += tf.reduce_sum(tf.where(background[rows], ce, tf.zeros_like(ce)))
                fg_total += tf.reduce_sum(tf.where(foreground[rows], ce, tf.zeros_like(ce)))
            previous = [bg_total, fg_total]

        def grad(d_bg, d_fg):
            pixel_weight = tf.where(background, d_bg / bg_count,
                                    tf.where(foreground, d_fg / fg_count, tf.zeros_like(d_fg)))  # [H, W]
            grad_columns, previous = tf.zeros_like(columns), [d_bg, d_fg]
            for rows in chunks:
                with tf.control_dependencies(previous):
                    logits = chunk_logits(columns, rows)
                    # d CE / d logits = softmax - one_hot, the op's second output.
                    _, backprop = tf.raw_ops.SparseSoftmaxCrossEntropyWithLogits(
                        features=tf.reshape(logits, (-1, int(logits.shape[-1]))),
                        labels=tf.reshape(safe_labels[rows], (-1,)))
                    grad_logits = tf.reshape(backprop * tf.reshape(pixel_weight[rows], (-1, 1)),
                                             (-1, int(columns.shape[1])))
                    grad_columns += tf.matmul(row_matrix[rows], grad_logits, transpose_a=True)
                previous = [grad_columns]
            return grad_columns

        return (bg_total / bg_count, fg_total / fg_count), grad

    return losses(_resize_columns(x, f_h, f_w, width))


def split_ce_loss(x, seed, f_h, f_w):
    """The GNN's base loss (`mytool.train_with_nocrf`): CE on the bg-only seed + CE on the fg-only seed.

    Args:
      x: [f_h*f_w, C] node logits (row-major nodes).
      seed: [1, H, W] int seed (0 bg, 1..20, 255 unlabelled).
      f_h, f_w: node grid size.
    Returns:
      (loss, bg_loss, fg_loss, pred) with pred [1, H, W, C] the logits bilinearly resized to the seed size.
    """
    seed = tf.convert_to_tensor(seed)
    pred = node_logits_to_image(x, f_h, f_w, (int(seed.shape[1]), int(seed.shape[2])))
    bg_loss, fg_loss = split_ce_from_pred(pred, seed)
    return bg_loss + fg_loss, bg_loss, fg_loss, pred


def _class_id(box_class):
    if isinstance(box_class, (str, bytes)):
        name = box_class.decode() if isinstance(box_class, bytes) else box_class
        if name not in VOC_CLASS_IDS:
            raise ValueError(f'unknown VOC class name {name!r}')
        return VOC_CLASS_IDS[name]
    return int(box_class)


def _boxes(boxes, box_class):
    boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
    classes = [_class_id(c) for c in (box_class.tolist() if isinstance(box_class, np.ndarray) else box_class)]
    if len(classes) != len(boxes):
        raise ValueError(f'{len(boxes)} boxes but {len(classes)} box classes')
    return boxes, classes


def _box_mp_loss(pred, features_at, dot_with, boxes, box_class, seed):
    """box_mp_loss on any feature source: features_at(points [K, 2] absolute (y, x)) -> [K, F];
    dot_with(prototype [F]) -> [H, W] dot products of every pixel's feature with the prototype."""
    pred = tf.convert_to_tensor(pred, tf.float32)
    seed = tf.convert_to_tensor(seed)
    boxes, classes = _boxes(boxes, box_class)
    height, width = int(pred.shape[1]), int(pred.shape[2])
    mil_loss, mil_count, dis_loss, dis_count = 0.0, 0, 0.0, 0
    for (x0, y0, x1, y1), c in zip(boxes.tolist(), classes):
        pred_box = pred[0, y0:y1 + 1, x0:x1 + 1]
        box_h, box_w = int(pred_box.shape[0]), int(pred_box.shape[1])
        class_box = pred_box[..., c]
        # argmax returns the first maximum, as torch.max on CPU does.
        col_of_row = tf.argmax(class_box, axis=1, output_type=tf.int32)
        row_of_col = tf.argmax(class_box, axis=0, output_type=tf.int32)
        positions = tf.concat([tf.stack([tf.range(box_h), col_of_row], axis=1),
                               tf.stack([row_of_col, tf.range(box_w)], axis=1)], axis=0)
        pred_sel = tf.gather_nd(pred_box, positions)  # [K, C]
        fts_sel = features_at(positions + tf.constant([[y0, x0]], tf.int32))  # [K, F]
        k = box_h + box_w
        mil_loss += masked_cross_entropy(pred_sel, tf.fill([k], c), reduction='sum')
        mil_count += k
        norm = tf.norm(fts_sel, axis=1, keepdims=True)
        cos = tf.matmul(fts_sel, fts_sel, transpose_b=True) / (tf.matmul(norm, norm, transpose_b=True) + 1e-7)
        dis_loss += tf.reduce_sum(1.0 - cos + 1e-5)
        dis_count += k * k
        # Consistency check (a no-op for non-negative features): only the sign of the cosine matters.
        dot = dot_with(tf.stop_gradient(tf.reduce_mean(fts_sel, axis=0)))  # [H, W]
        in_box = np.zeros((height, width), bool)
        in_box[y0:y1 + 1, x0:x1 + 1] = True
        flip = in_box[None] & tf.equal(seed, tf.cast(c, seed.dtype)) & (dot < 0)[None]
        seed = tf.where(flip, tf.cast(IGNORE_LABEL, seed.dtype), seed)
    return mil_loss / mil_count + dis_loss / dis_count, seed


def box_mp_loss(pred, fts, boxes, box_class, seed):
    """`mytool.box_mp_loss_with_consistency_checking`: box MIL on row/column maxima plus feature consistency.

    For each box (xmin, ymin, xmax, ymax, used as 0-based inclusive indices like the original) and its class c,
    the pixels of maximal class-c logit in every row and every column are selected; the loss sums their CE to c
    (divided by the number of selected pixels over all boxes) plus the mean of (1 - cos + 1e-5) over all pairs of
    their features. Seed pixels of class c inside the box whose feature has a negative cosine to the mean
    selected feature become 255 (the original edits the seed in place; here the edited seed is returned, and each
    box sees the edits of the boxes before it).

    Args:
      pred: [1, H, W, C] logits; fts: [1, H, W, F] features; boxes: [B, 4] ints; box_class: B class ids
        (1..20) or VOC names; seed: [1, H, W] int labels.
    Returns:
      (loss, seed_after).
    """
    fts = tf.convert_to_tensor(fts, tf.float32)[0]
    return _box_mp_loss(pred, lambda points: tf.gather_nd(fts, points),
                        lambda prototype: tf.reduce_sum(fts * prototype, axis=-1), boxes, box_class, seed)


def box_mp_loss_from_nodes(pred, fts_nodes, f_h, f_w, boxes, box_class, seed):
    """box_mp_loss with fts = bilinear(fts_nodes [f_h*f_w, F] -> seed size), without the full-resolution feature
    map: the selected pixels are interpolated from their 4 nodes (the same weights and sum as `resize_bilinear`),
    and the prototype test upsamples the node-level dot products (bilinear resizing is linear)."""
    pred = tf.convert_to_tensor(pred, tf.float32)
    height, width = int(pred.shape[1]), int(pred.shape[2])
    nodes = tf.reshape(tf.convert_to_tensor(fts_nodes, tf.float32), (f_h, f_w, -1))
    h_taps = [tf.constant(t) for t in _linear_taps(f_h, height)]
    w_taps = [tf.constant(t) for t in _linear_taps(f_w, width)]

    def features_at(points):
        h0, h1, hl0, hl1 = (tf.gather(t, points[:, 0]) for t in h_taps)
        w0, w1, wl0, wl1 = (tf.gather(t, points[:, 1]) for t in w_taps)

        def tap(rows, cols, hl, wl):
            weight = tf.cast(hl * wl, tf.float32)[:, None]
            return tf.gather_nd(nodes, tf.stack([rows, cols], axis=1)) * weight

        return tap(h0, w0, hl0, wl0) + (tap(h0, w1, hl0, wl1) + (tap(h1, w0, hl1, wl0) + tap(h1, w1, hl1, wl1)))

    def dot_with(prototype):
        dots = tf.reduce_sum(nodes * prototype, axis=-1)[None, :, :, None]
        return resize_bilinear(dots, (height, width))[0, :, :, 0]

    return _box_mp_loss(pred, features_at, dot_with, boxes, box_class, seed)


def box_mil_loss(pred, boxes, box_class):
    """`mytool.box_mil_loss` (unused by the original scripts): per box, the all-class maxima over the box's rows
    (one per column) and over its columns (one per row), mean CE to the box class, averaged over boxes.

    Args:
      pred: [1, H, W, C] logits; boxes: [B, 4]; box_class: B class ids or VOC names.
    Returns:
      scalar loss.
    """
    pred = tf.convert_to_tensor(pred, tf.float32)
    boxes, classes = _boxes(boxes, box_class)
    loss = 0.0
    for (x0, y0, x1, y1), c in zip(boxes.tolist(), classes):
        pred_box = pred[0, y0:y1 + 1, x0:x1 + 1]
        maxima = tf.concat([tf.reduce_max(pred_box, axis=0), tf.reduce_max(pred_box, axis=1)], axis=0)
        loss += masked_cross_entropy(maxima, tf.fill([int(maxima.shape[0])], c))
    return loss / len(boxes)
