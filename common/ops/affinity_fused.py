"""Fused affinity-field (AFF/AAF) loss: stencil formulation with an analytic gradient, XLA-compilable.

Computes the same edge / non-edge means as the literal losses in `aaf.losses` (which gather from [N,H,W,C,8]
tensors) without materialising those tensors or any index list. Notation: P = probs, ~ = clip to [1e-4, 1],
for a pair (centre p, neighbour p+d) and class c

  KL_d(p, c) = P~(p+d) (log P~(p+d) - log P~(p)) + (1-P)~(p+d) (log (1-P)~(p+d) - log (1-P)~(p)).

Layout (chosen by measuring XLA CPU, where elementwise loops vectorise well but every separate reduction is
an expensive pass): the clipped probabilities, their logs and the labels are padded once by the largest size,
so for every offset d the window "shifted by d" is a full [N,H,W,...] tensor aligned with the centre pixel
(out-of-image neighbours read padded, ignored labels and are masked). All 8 offsets of a size are then summed
elementwise and reduced over channels once, edge and non-edge in one stacked reduction: one loop per size, no
scatter, no [N,H,W,C,8] tensor or index list. The per-centre-class sums are one matmul with the one-hot labels.

Masks come from the labels only. A pair (p, p+d) is valid when p, p+d AND p-d are labelled (< num_classes) and
inside the image (AAF's bidirectional ignore, Q-A4). On a valid pair with labels a != b, channels a and b are
edges and the other C-2 channels are non-edges; with a == b all C channels are non-edges (Q-A5). Sums are
reduced per centre class, so the adaptive per-class weights enter as a dot product and their gradient is the
per-class sum.

Gradient: `tf.custom_gradient`, analytic w.r.t. `probs` and the per-class weights. It follows TensorFlow's
gradients of the original ops: clip_by_value (min then max) passes the gradient only where 1e-4 <= v <= 1, and
max(0, margin - KL) only where KL < margin. The backward pass recomputes the stencil (nothing [N,H,W,C] per
offset is kept) as ONE elementwise loop that writes the gradient of each pixel z directly: for each offset d it
evaluates the pair (z, z+d) in both roles (z the centre with offset d, z the neighbour of centre z+d with offset
-d), which share the log differences and edge channels, so no scatter is needed.

Implementations (`impl`): 'xla' is this module's stencil op (any device, XLA-compilable); 'kernel' is the
compiled C++ CPU kernel of `common.ops.affinity_kernel` (same maths, built on first use); 'auto' takes the
kernel on CPU and the XLA op where the kernel cannot run (a GPU is visible, the call is being XLA-compiled, or
the kernel cannot be built / loaded -- then one line is logged).

Divergence from the original (Q-A3): an empty edge or non-edge set contributes 0 (the original's mean of an
empty tensor is NaN). The reference losses in `aaf.losses` keep the NaN.
"""
import logging

import tensorflow as tf

CLIP_LOW = 1e-4
CLIP_HIGH = 1.0
_PAD_PROB = 0.5  # any value with finite logs: padded pixels only meet zero masks
IMPLEMENTATIONS = ('auto', 'kernel', 'xla')
_logger = logging.getLogger(__name__)


@tf.autograph.experimental.do_not_convert
def resolve_impl(impl):
    """'kernel' or 'xla' for `impl` in IMPLEMENTATIONS ('auto': the kernel on CPU when it loads).

    Raises:
      ValueError: unknown impl. KernelUnavailableError: impl='kernel' and the kernel cannot be built or loaded.
    """
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f'affinity_field_loss: impl must be one of {IMPLEMENTATIONS}, got {impl!r}')
    if impl == 'xla':
        return 'xla'
    from common.ops import affinity_kernel
    if impl == 'kernel':
        affinity_kernel.load_kernel(raise_errors=True)
        return 'kernel'
    if affinity_kernel.LIBRARY.serves_auto(_logger, 'affinity-field C++ kernel unavailable (%s); using the XLA op'):
        return 'kernel'
    return 'xla'


def _offsets(size):
    """The 8 neighbour offsets (dy, dx) at distance `size`."""
    return tuple((dy, dx) for dy in (-size, 0, size) for dx in (-size, 0, size) if (dy, dx) != (0, 0))


def _spatial_dims(x):
    """Static H, W when known, else dynamic scalars."""
    dynamic = tf.shape(x)
    height = x.shape[1] if x.shape[1] is not None else dynamic[1]
    width = x.shape[2] if x.shape[2] is not None else dynamic[2]
    return height, width


class _Shifted:
    """Full-image windows of a tensor padded by `pad` on both spatial sides: window (dy, dx) holds at pixel p the
    value at p + (dy, dx) (the pad value outside the image). Every term of every offset is then aligned with its
    centre pixel, so XLA can sum all offsets elementwise and reduce over channels once."""

    def __init__(self, padded, pad, height, width):
        self.padded, self.pad, self.height, self.width = padded, pad, height, width

    def at(self, dy=0, dx=0):
        r0, c0 = self.pad + dy, self.pad + dx
        return self.padded[:, r0:r0 + self.height, c0:c0 + self.width]


def affinity_field_loss(labels, probs, num_classes, kld_margin, sizes=(1,), w_edge=None, w_not_edge=None,
                        impl='xla', logits=None):
    """Edge / non-edge means of the (adaptive) affinity-field loss for several sizes in one call.

    Args:
      labels: [N, H, W, 1] or [N, H, W] integer labels; values > num_classes-1 (e.g. 255) are ignored.
      probs: [N, H, W, C] float32 softmax probabilities.
      num_classes: C.
      kld_margin: margin m of the edge term max(0, m - KL).
      sizes: neighbour distances (python ints), e.g. (1,) for AFF, (1, 2, 3) for AAF.
      w_edge, w_not_edge: optional per-class weights [C, len(sizes)] (AAF: softmax of the adversarial
        variables over the sizes); the weight of a pair is that of its centre class. None = weight 1 (AFF).
      impl: 'xla' (this module's op), 'kernel' (compiled CPU kernel) or 'auto' (kernel on CPU, else XLA).
      logits: optional [N, H, W, C] with probs = tf.nn.softmax(logits). The kernel then reads the logits and
        takes their softmax itself (probs is not read and gets no gradient; the gradient goes to the logits); the
        XLA op ignores it.
    Returns:
      (edge_means [S], not_edge_means [S], edge_counts [S] int32, not_edge_counts [S] int32); S = len(sizes).
      mean = sum of the (weighted) terms / number of terms, 0 for an empty set. Differentiable w.r.t. probs,
      w_edge and w_not_edge.
    """
    sizes = tuple(int(s) for s in sizes)
    if not sizes or min(sizes) < 1:
        raise ValueError(f'affinity_field_loss: sizes must be positive ints, got {sizes}')
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == 4:
        labels = tf.squeeze(labels, axis=-1)
    if labels.shape.rank != 3:
        raise ValueError(f'affinity_field_loss: labels must be [N,H,W,1] or [N,H,W], got {labels.shape}')
    labels = tf.cast(labels, tf.int32)
    probs = tf.convert_to_tensor(probs, tf.float32)
    if probs.shape.rank != 4:
        raise ValueError(f'affinity_field_loss: probs must be [N,H,W,C], got {probs.shape}')
    num_sizes = len(sizes)
    ones = tf.ones([num_classes, num_sizes], tf.float32)
    w_edge = ones if w_edge is None else tf.reshape(tf.cast(w_edge, tf.float32), [num_classes, num_sizes])
    w_not_edge = ones if w_not_edge is None else tf.reshape(
        tf.cast(w_not_edge, tf.float32), [num_classes, num_sizes])
    if probs.shape[-1] is not None and probs.shape[-1] != num_classes:
        raise ValueError(f'affinity_field_loss: probs have {probs.shape[-1]} channels, num_classes={num_classes}')
    if resolve_impl(impl) == 'kernel':
        return _kernel_means(labels, probs, kld_margin, sizes, w_edge, w_not_edge, logits)
    height, width = _spatial_dims(probs)
    reach = max(sizes)

    # ---- label-only part (no gradient). Ignored and outside pixels both read as label num_classes.
    labels = tf.where(labels < num_classes, labels, num_classes)
    # The bidirectional ignore of a centre p at offset d needs p - d too: labels are padded by 2 * reach.
    label_at = _Shifted(tf.pad(labels, [[0, 0], [2 * reach, 2 * reach], [2 * reach, 2 * reach]],
                               constant_values=num_classes), 2 * reach, height, width).at
    one_hot = tf.one_hot(labels, num_classes, dtype=tf.float32)  # all-zero rows for ignored pixels
    one_hot_flat = tf.reshape(one_hot, [-1, num_classes])

    def pair_flags(dy, dx):
        """Booleans [N,H,W] of the pairs (p, p + d) for every pixel p: valid (with p the centre: p, p+d and, for
        AAF's bidirectional ignore (Q-A4), p-d labelled) and differ (p, p+d labelled, with different labels)."""
        label_c, label_n = label_at(), label_at(dy, dx)
        pair = (label_c < num_classes) & (label_n < num_classes)
        return pair & (label_at(-dy, -dx) < num_classes), pair & tf.not_equal(label_c, label_n)

    def pair_masks(dy, dx):
        """Float masks of the pairs (p, p + d): valid [N,H,W,1] (p the centre) and edge_channels [N,H,W,C] (the
        edge channels of the pair whichever pixel is the centre; valid still has to be applied)."""
        valid, differ = pair_flags(dy, dx)
        # Labels a != b: channels a and b are edges, the other C-2 non-edges (Q-A5).
        edge_channels = tf.cast(differ, tf.float32)[..., None] * (
            tf.one_hot(label_at(), num_classes) + tf.one_hot(label_at(dy, dx), num_classes))
        return tf.cast(valid, tf.float32)[..., None], edge_channels

    edge_counts, not_edge_counts = [], []
    for size in sizes:
        n_valid, n_differ = 0, 0
        for dy, dx in _offsets(size):
            valid, differ = pair_flags(dy, dx)
            n_valid += tf.cast(valid, tf.int32)
            n_differ += tf.cast(valid & differ, tf.int32)
        # Elementwise over offsets first, one reduction per size (XLA CPU reductions are slow, additions are not).
        n_valid, n_differ = tf.reduce_sum(n_valid), tf.reduce_sum(n_differ)
        edge_counts.append(2 * n_differ)
        not_edge_counts.append(num_classes * n_valid - 2 * n_differ)
    edge_counts = tf.stack(edge_counts)
    not_edge_counts = tf.stack(not_edge_counts)
    # Reciprocal counts; an empty set gets 0 (Q-A3 divergence).
    inv_edge = tf.math.divide_no_nan(1.0, tf.cast(edge_counts, tf.float32))
    inv_not_edge = tf.math.divide_no_nan(1.0, tf.cast(not_edge_counts, tf.float32))

    def clip_terms(probs):
        """Shifted windows of P~, (1-P)~ and their logs (computed once per padded pixel)."""
        padded = tf.pad(probs, [[0, 0], [reach, reach], [reach, reach], [0, 0]], constant_values=_PAD_PROB)
        pos = tf.clip_by_value(padded, CLIP_LOW, CLIP_HIGH)
        neg = tf.clip_by_value(1.0 - padded, CLIP_LOW, CLIP_HIGH)
        return tuple(_Shifted(t, reach, height, width).at for t in (pos, neg, tf.math.log(pos), tf.math.log(neg)))

    def kl_terms(clipped, dy, dx):
        """Per-channel KL of the pairs (centre p, neighbour p + d) and the log differences, all [N,H,W,C]."""
        pos, neg, log_pos, log_neg = clipped
        diff_pos = log_pos(dy, dx) - log_pos()
        diff_neg = log_neg(dy, dx) - log_neg()
        return pos(dy, dx) * diff_pos + neg(dy, dx) * diff_neg, diff_pos, diff_neg

    @tf.custom_gradient
    def means_fn(probs, w_edge, w_not_edge):
        clipped = clip_terms(probs)
        pixel_sums = []  # per size: edge and non-edge sums over channels and offsets, per centre pixel [N,H,W]
        for size in sizes:
            edge_total, not_edge_total = 0.0, 0.0
            for dy, dx in _offsets(size):
                valid, edge_channels = pair_masks(dy, dx)
                kl, _, _ = kl_terms(clipped, dy, dx)
                edge_total += valid * edge_channels * tf.maximum(0.0, kld_margin - kl)
                not_edge_total += valid * (1.0 - edge_channels) * kl
            # Stacked, the two sums are one XLA loop that shares the KL values (two reductions would compute them
            # twice).
            both = tf.reduce_sum(tf.stack([edge_total, not_edge_total], -1), -2)
            pixel_sums += [both[..., 0], both[..., 1]]
        # Per centre class: one matmul with the one-hot labels, [C, 2S].
        class_sums = tf.matmul(one_hot_flat, tf.reshape(tf.stack(pixel_sums, -1), [-1, 2 * num_sizes]),
                               transpose_a=True)
        edge_sums, not_edge_sums = class_sums[:, 0::2], class_sums[:, 1::2]  # [C, S]
        edge_means = tf.reduce_sum(w_edge * edge_sums, axis=0) * inv_edge
        not_edge_means = tf.reduce_sum(w_not_edge * not_edge_sums, axis=0) * inv_not_edge

        def grad_fn(d_edge, d_not_edge):
            d_edge = tf.zeros([num_sizes]) if d_edge is None else d_edge
            d_not_edge = tf.zeros([num_sizes]) if d_not_edge is None else d_not_edge
            grad_w_edge = edge_sums * (d_edge * inv_edge)[None, :]
            grad_w_not_edge = not_edge_sums * (d_not_edge * inv_not_edge)[None, :]
            # d loss / d term for each centre pixel and size, padded so it can be read at p - d: [N,H,W,S].
            scales = tf.matmul(one_hot_flat, tf.concat([w_edge * (d_edge * inv_edge),
                                                        w_not_edge * (d_not_edge * inv_not_edge)], -1))
            scales = tf.pad(tf.reshape(scales, tf.concat([tf.shape(probs)[:3], [2 * num_sizes]], 0)),
                            [[0, 0], [reach, reach], [reach, reach], [0, 0]])
            scale_at = _Shifted(scales, reach, height, width).at
            pos, neg = clipped[0], clipped[1]
            neg_raw = 1.0 - probs
            pos_pass = tf.cast((probs >= CLIP_LOW) & (probs <= CLIP_HIGH), tf.float32)
            neg_pass = tf.cast((neg_raw >= CLIP_LOW) & (neg_raw <= CLIP_HIGH), tf.float32)
            # KL(p, p+d) = P~(p+d) (L(p+d) - L(p)) + ...; L = log P~. A pixel z gets the gradient of its terms as
            # a centre (d KL / d P~(z) = -P~(z+d) / P~(z), summed over offsets before the one division) and as
            # the neighbour of the centre z+d at offset -d (d KL / d P~(z) = 1 + L(z) - L(z+d)). The clips pass
            # the gradient where low <= v <= high; d (1-P)~ / dP = -1.
            centre_pos, centre_neg, neighbour_pos, neighbour_neg = 0.0, 0.0, 0.0, 0.0
            for s_index, size in enumerate(sizes):
                edge_s, not_edge_s = s_index, num_sizes + s_index
                for dy, dx in _offsets(size):
                    # Pair (z, z+d) in both roles: z the centre (offset d) and z the neighbour of centre z+d
                    # (offset -d). Both share the log differences and the edge channels.
                    valid, edge_channels = pair_masks(dy, dx)
                    # Centre z+d: z, z+d and z+2d labelled.
                    valid_back = tf.cast((label_at() < num_classes) & (label_at(dy, dx) < num_classes)
                                         & (label_at(2 * dy, 2 * dx) < num_classes), tf.float32)[..., None]
                    kl, diff_pos, diff_neg = kl_terms(clipped, dy, dx)
                    kl_back = -(pos() * diff_pos + neg() * diff_neg)
                    scale, scale_back = scale_at(), scale_at(dy, dx)
                    d_kl = valid * (scale[..., not_edge_s:not_edge_s + 1] * (1.0 - edge_channels)
                                    - scale[..., edge_s:edge_s + 1] * edge_channels
                                    * tf.cast(kl < kld_margin, tf.float32))
                    d_kl_back = valid_back * (scale_back[..., not_edge_s:not_edge_s + 1] * (1.0 - edge_channels)
                                              - scale_back[..., edge_s:edge_s + 1] * edge_channels
                                              * tf.cast(kl_back < kld_margin, tf.float32))
                    centre_pos += d_kl * pos(dy, dx)
                    centre_neg += d_kl * neg(dy, dx)
                    neighbour_pos += d_kl_back * (1.0 - diff_pos)
                    neighbour_neg += d_kl_back * (1.0 - diff_neg)
            grad = (pos_pass * (neighbour_pos - centre_pos / pos())
                    - neg_pass * (neighbour_neg - centre_neg / neg()))
            return grad, grad_w_edge, grad_w_not_edge

        return (edge_means, not_edge_means), grad_fn

    edge_means, not_edge_means = means_fn(probs, w_edge, w_not_edge)
    return edge_means, not_edge_means, edge_counts, not_edge_counts


def _kernel_means(labels, probs, kld_margin, sizes, w_edge, w_not_edge, logits=None):
    """The compiled kernel's per-class sums turned into the weighted means (gradients w.r.t. the weights by
    TensorFlow's autodiff of these few ops, w.r.t. probs by the kernel's registered gradient)."""
    from common.ops.affinity_kernel import affinity_field_class_sums
    num_sizes = len(sizes)
    if logits is not None:
        logits = tf.convert_to_tensor(logits, tf.float32)
    class_sums, edge_counts, not_edge_counts = affinity_field_class_sums(labels, probs, kld_margin, sizes,
                                                                         logits=logits)
    inv_edge = tf.math.divide_no_nan(1.0, tf.cast(edge_counts, tf.float32))
    inv_not_edge = tf.math.divide_no_nan(1.0, tf.cast(not_edge_counts, tf.float32))
    edge_means = tf.reduce_sum(w_edge * class_sums[:, :num_sizes], axis=0) * inv_edge
    not_edge_means = tf.reduce_sum(w_not_edge * class_sums[:, num_sizes:], axis=0) * inv_not_edge
    return edge_means, not_edge_means, edge_counts, not_edge_counts
