"""AAF losses: affinity field (AFF), adaptive affinity field (AAF), adversarial size weights, loss assembly.

Two forms of the same loss:
* `affinity_loss` / `adaptive_affinity_loss`: literal ports of `network/aaf/losses.py` (materialise
  [N,H,W,C,8] tensors and gather the entries); used for parity and as the benchmark's "original". The mean of
  an empty edge / non-edge set is NaN, as in the original (Q-A3).
* `affinity_loss_fused` / `adaptive_affinity_loss_fused`: the stencil op of `common.ops.affinity_fused`
  (custom gradient, XLA); used for training. Empty sets contribute 0.
`aaf_loss_terms(impl=...)` picks the implementation: 'reference' (the literal form), 'xla' (the fused stencil
op), 'kernel' (the compiled C++ CPU kernel of `common.ops.affinity_kernel`, same maths as 'xla') or 'auto'
(the training default: the kernel on CPU, else the XLA op).
`aaf_loss_terms` assembles the training term of train_affinity.py ('aff_loss') or train_aaf.py ('aaf_loss').
"""
import keras
import tensorflow as tf

from common.ops import affinity as nnx
from common.ops.affinity_fused import affinity_field_loss
from common.train.schedules import affinity_decay

AAF_SIZES = (1, 2, 3)
_CLIP_LOW = 1e-4
_CLIP_HIGH = 1.0


def _binary_kl_terms(labels, one_hot_lab, probs, size, num_classes):
    """Shared body of the literal losses: (kl [N,H,W,C,8], edge mask, not-edge mask)."""
    labels = tf.squeeze(labels, axis=-1)
    not_ignore = tf.logical_not(nnx.ignores_from_label(labels, num_classes, size))[:, :, :, None, :]
    edge = nnx.edges_from_label(one_hot_lab, size, 255)
    edge = tf.logical_and(edge, not_ignore)
    not_edge = tf.logical_and(tf.logical_not(edge), not_ignore)

    paired = nnx.eightcorner_activation(probs, size)
    centre = probs[..., None]
    centre_neg = tf.clip_by_value(1 - centre, _CLIP_LOW, _CLIP_HIGH)
    paired_neg = tf.clip_by_value(1 - paired, _CLIP_LOW, _CLIP_HIGH)
    centre = tf.clip_by_value(centre, _CLIP_LOW, _CLIP_HIGH)
    paired = tf.clip_by_value(paired, _CLIP_LOW, _CLIP_HIGH)
    # Binary KL(neighbour || centre); gradients flow into both sides.
    kl = paired * tf.math.log(paired / centre) + paired_neg * tf.math.log(paired_neg / centre_neg)
    return kl, edge, not_edge


def _gather(values, mask):
    """Entries of `values` where `mask`, row-major order, shape [K, 1] (tf.where indices + gather)."""
    indices = tf.where(tf.reshape(mask, [-1]))
    return tf.gather(tf.reshape(values, [-1]), indices)


def affinity_loss(labels, probs, num_classes, kld_margin):
    """Affinity field loss at distance 1 (literal form of the original).

    Args:
      labels: [N, H, W, 1] integer labels; values > num_classes-1 are ignored (with their pairs).
      probs: [N, H, W, C] softmax probabilities.
      num_classes: C.
      kld_margin: margin of the edge term.
    Returns:
      (edge_loss [E, 1] = max(0, margin - KL) on edges, not_edge_loss [F, 1] = KL on non-edges), gathered in
      row-major (N, H, W, C, 8) order.
    """
    labels = tf.convert_to_tensor(labels)
    one_hot_lab = tf.one_hot(tf.squeeze(labels, axis=-1), depth=num_classes)
    kl, edge, not_edge = _binary_kl_terms(labels, one_hot_lab, probs, 1, num_classes)
    edge_loss = tf.maximum(0.0, kld_margin - kl)
    return _gather(edge_loss, edge), _gather(kl, not_edge)


def adaptive_affinity_loss(labels, one_hot_lab, probs, size, num_classes, kld_margin, w_edge, w_not_edge):
    """Adaptive affinity field loss at distance `size` (literal form of the original).

    Args:
      labels: [N, H, W, 1] integer labels.
      one_hot_lab: [N, H, W, C] float one-hot labels (tf.one_hot of the labels; ignored rows all zero).
      probs: [N, H, W, C] softmax probabilities.
      size: neighbour distance (1, 2, 3 in train_aaf.py).
      num_classes: C.
      kld_margin: margin of the edge term.
      w_edge, w_not_edge: per-class weights (1, 1, 1, C, 1); the weight of a pair is its centre class's.
    Returns:
      (edge_loss [E, 1], not_edge_loss [F, 1]) weighted and gathered in row-major (N, H, W, C, 8) order.
    """
    labels = tf.convert_to_tensor(labels)
    one_hot_lab = tf.convert_to_tensor(one_hot_lab, tf.float32)
    kl, edge, not_edge = _binary_kl_terms(labels, one_hot_lab, probs, size, num_classes)
    one_hot_5d = one_hot_lab[..., None]
    pixel_w_edge = tf.reduce_sum(w_edge * one_hot_5d, axis=3, keepdims=True)
    pixel_w_not_edge = tf.reduce_sum(w_not_edge * one_hot_5d, axis=3, keepdims=True)
    edge_loss = tf.maximum(0.0, kld_margin - kl) * pixel_w_edge
    not_edge_loss = kl * pixel_w_not_edge
    return _gather(edge_loss, edge), _gather(not_edge_loss, not_edge)


def size_softmax(w_raw, num_classes):
    """softmax over the 3 sizes of an adversarial variable (1,1,1,C,1,3) -> [C, 3].

    Taken on a 2-D view: oneDNN's softmax rejects tensors of rank > 5.
    """
    return tf.nn.softmax(tf.reshape(w_raw, [num_classes, -1]), axis=-1)


def adaptive_affinity_loss_per_size(labels, probs, num_classes, kld_margin, w_edge=None, w_not_edge=None,
                                    sizes=AAF_SIZES):
    """The literal (gather) adaptive affinity loss for every size, as the original builds it size by size.

    Args:
      labels: [N, H, W, 1] integer labels.
      probs: [N, H, W, C] softmax probabilities.
      w_edge, w_not_edge: [C, len(sizes)] per-class size weights AFTER `size_softmax`, or None for weight 1.
      sizes: neighbour distances; the j-th size uses column j of the weights.
    Returns:
      (edge_losses, not_edge_losses): lists of 1-D tensors, one per size (their means are the original's terms).
    """
    one_hot_lab = tf.one_hot(tf.squeeze(tf.cast(labels, tf.int32), axis=-1), depth=num_classes)

    def column(w, index):
        if w is None:
            return tf.ones([1, 1, 1, num_classes, 1])
        return tf.reshape(w[:, index], [1, 1, 1, num_classes, 1])

    edges, not_edges = [], []
    for index, size in enumerate(sizes):
        edge_loss, not_edge_loss = adaptive_affinity_loss(labels, one_hot_lab, probs, size, num_classes, kld_margin,
                                                          column(w_edge, index), column(w_not_edge, index))
        edges.append(edge_loss)
        not_edges.append(not_edge_loss)
    return edges, not_edges


def affinity_loss_fused(labels, probs, num_classes, kld_margin):
    """Fused affinity field loss at distance 1.

    Returns:
      (edge_mean, not_edge_mean, counts) with scalar means (0 for an empty set, unlike the original's NaN) and
      counts = (edge_count, not_edge_count) int32 scalars.
    """
    edge, not_edge, edge_count, not_edge_count = affinity_field_loss(labels, probs, num_classes, kld_margin,
                                                                     sizes=(1,))
    return edge[0], not_edge[0], (edge_count[0], not_edge_count[0])


def adaptive_affinity_loss_fused(labels, probs, num_classes, kld_margin, w_edge_raw, w_not_edge_raw,
                                 sizes=AAF_SIZES, impl='xla', logits=None):
    """Fused adaptive affinity loss for all sizes in one call.

    Args:
      labels: [N, H, W, 1] integer labels.
      probs: [N, H, W, C] softmax probabilities.
      w_edge_raw, w_not_edge_raw: the adversarial variables (1,1,1,C,1,len(sizes)) BEFORE the softmax
        (the softmax over sizes is applied here, differentiably).
      sizes: neighbour distances; the j-th size uses softmax(W)[..., j].
      impl: 'xla', 'kernel' or 'auto' (see `common.ops.affinity_fused.affinity_field_loss`).
      logits: optional, with probs = softmax(logits): the kernel's gradient goes to the logits in one op.
    Returns:
      (edge_means [S], not_edge_means [S], edge_counts [S] int32, not_edge_counts [S] int32).
    """
    w_edge = size_softmax(w_edge_raw, num_classes)
    w_not_edge = size_softmax(w_not_edge_raw, num_classes)
    return affinity_field_loss(labels, probs, num_classes, kld_margin, sizes=sizes, w_edge=w_edge,
                               w_not_edge=w_not_edge, impl=impl, logits=logits)


class AdaptiveAffinityWeights(keras.layers.Layer):
    """The adversarial per-class size weights of train_aaf.py: variables `edge_w` and `nonedge_w`.

    Both have shape (1, 1, 1, C, 1, 3), start at 0 (uniform 1/3 after the softmax) and are trained by gradient
    ASCENT: `ascent = True` on the layer and on each variable tells the training engine to negate their
    gradients (TF1 momentum at the base learning rate). Their original names lack 'weights' (no L2) and contain
    'edge' (separate optimizer group); `restore = False` marks them as never restored from checkpoints
    (Q-A9: they restart from 0 in stage 2).

    Calling the layer returns (w_edge [C, 3], w_not_edge [C, 3]), the softmax over the 3 sizes.
    """

    ascent = True
    restore = False

    def __init__(self, num_classes, num_sizes=len(AAF_SIZES), **kwargs):
        kwargs.setdefault('name', 'adaptive_affinity_weights')
        super().__init__(**kwargs)
        from common.models.naming import set_original_name
        self.num_classes = int(num_classes)
        self.num_sizes = int(num_sizes)
        shape = (1, 1, 1, self.num_classes, 1, self.num_sizes)
        self.edge_w = self.add_weight(name='edge_w', shape=shape, initializer='zeros', dtype='float32')
        self.nonedge_w = self.add_weight(name='nonedge_w', shape=shape, initializer='zeros', dtype='float32')
        for variable, name in ((self.edge_w, 'edge_w'), (self.nonedge_w, 'nonedge_w')):
            set_original_name(variable, name)
            try:
                variable.ascent = True
                variable.restore = False
            except AttributeError:  # Some variable types refuse new attributes; the layer flag remains.
                pass

    def call(self, inputs=None):
        return size_softmax(self.edge_w, self.num_classes), size_softmax(self.nonedge_w, self.num_classes)

    def get_config(self):
        return {**super().get_config(), 'num_classes': self.num_classes, 'num_sizes': self.num_sizes}


LOSS_IMPLEMENTATIONS = ('auto', 'kernel', 'xla', 'reference')


def resolve_loss_impl(fused=True, impl=None):
    """The implementation of the affinity term from the legacy `fused` switch and the `impl` choice.

    impl None follows `fused` ('auto' / 'reference'); an explicit impl wins, except that fused=False with a
    fused impl ('auto', 'kernel', 'xla') is contradictory and raises ValueError.
    """
    if impl is None:
        return 'auto' if fused else 'reference'
    if impl not in LOSS_IMPLEMENTATIONS:
        raise ValueError(f'affinity implementation must be one of {LOSS_IMPLEMENTATIONS}, got {impl!r}')
    if not fused and impl != 'reference':
        raise ValueError(f"fused=False / --nofused_loss (the literal original loss) contradicts "
                         f"impl / --affinity_impl={impl!r}; use 'reference' or the fused loss")
    return impl


def aaf_loss_terms(logits, labels, num_classes, step, num_steps, mode='aaf', kld_margin=3.0, kld_lambda_1=1.0,
                   kld_lambda_2=1.0, weights=None, fused=True, stats=None, as_ratios=False, impl=None):
    """The affinity term of train_affinity.py (mode 'affinity') or train_aaf.py (mode 'aaf').

    'affinity': aff_loss = dec * (lambda1 * mean(edge) + lambda2 * mean(not_edge)), size 1, no weights.
    'aaf': aaf_loss = dec * sum_{s=1..3} (lambda1 * mean(edge_s) + lambda2 * mean(not_edge_s)) with the
    adversarial weights. dec = affinity_decay(step, num_steps). Segmentation CE and L2 are the engine's.

    Args:
      logits: [N, h, w, C] network output (the loss takes its softmax).
      labels: [N, h, w, 1] (or [N, h, w]) labels shrunk to the output size; > C-1 ignored.
      num_classes: C.
      step, num_steps: python loop index and --num-steps (for the decay).
      mode: 'affinity' or 'aaf'.
      weights: an `AdaptiveAffinityWeights` (required in 'aaf' mode).
      fused: True = fused op (empty sets -> 0); False = literal original (empty sets -> NaN).
      stats: optional dict, filled with per-size means and counts for logging (not loss terms).
      as_ratios: return the term as the training engine's list of (numerator, denominator) pairs, one per size
        and edge / non-edge set: (dec * lambda * mean * count, count). The engine then divides by counts summed
        over replicas (`--loss-reduction global_mean`: the single-device loss of the global batch) or by the
        replica's own counts weighted by its share of the batch (`tower_mean`, the original multi-GPU script).
        The sums are mean * count because the fused op returns means; a NaN mean (literal form, empty set) stays
        NaN.
      impl: 'auto' | 'kernel' | 'xla' | 'reference'; None = 'auto' if fused else 'reference'. 'reference' is
        the literal original (fused=False); the others are the fused maths (empty sets -> 0).
    Returns:
      dict with one loss term to add to the total: {'aff_loss': scalar} or {'aaf_loss': scalar} (with
      `as_ratios`, a list of pairs instead of the scalar).
    """
    if mode not in ('affinity', 'aaf'):
        raise ValueError(f"aaf_loss_terms: mode must be 'affinity' or 'aaf', got {mode!r}")
    if mode == 'aaf' and weights is None:
        raise ValueError("aaf_loss_terms: mode 'aaf' needs weights=AdaptiveAffinityWeights(num_classes)")
    impl = resolve_loss_impl(fused, impl)
    fused = impl != 'reference'
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == 3:
        labels = labels[..., None]
    logits = tf.cast(logits, tf.float32)
    probs = tf.nn.softmax(logits, axis=-1)
    dec = affinity_decay(tf.cast(step, tf.float32), num_steps)
    if mode == 'affinity':
        sizes = (1,)
        if fused:
            edge, not_edge, edge_count, not_edge_count = affinity_field_loss(
                labels, probs, num_classes, kld_margin, sizes=sizes, impl=impl, logits=logits)
        else:
            edge_loss, not_edge_loss = affinity_loss(labels, probs, num_classes, kld_margin)
            edge, not_edge = tf.reduce_mean(edge_loss)[None], tf.reduce_mean(not_edge_loss)[None]
            edge_count, not_edge_count = tf.shape(edge_loss)[:1], tf.shape(not_edge_loss)[:1]
    else:
        sizes = AAF_SIZES
        if fused:
            edge, not_edge, edge_count, not_edge_count = adaptive_affinity_loss_fused(
                labels, probs, num_classes, kld_margin, weights.edge_w, weights.nonedge_w, sizes=sizes, impl=impl,
                logits=logits)
        else:
            w_edge, w_not_edge = weights()
            edge_losses, not_edge_losses = adaptive_affinity_loss_per_size(
                labels, probs, num_classes, kld_margin, w_edge, w_not_edge, sizes)
            edges = [tf.reduce_mean(e) for e in edge_losses]
            not_edges = [tf.reduce_mean(e) for e in not_edge_losses]
            edge_counts = [tf.shape(e)[0] for e in edge_losses]
            not_edge_counts = [tf.shape(e)[0] for e in not_edge_losses]
            edge, not_edge = tf.stack(edges), tf.stack(not_edges)
            edge_count, not_edge_count = tf.stack(edge_counts), tf.stack(not_edge_counts)
    name = 'aff_loss' if mode == 'affinity' else 'aaf_loss'
    if as_ratios:
        ratios = []
        for index in range(len(sizes)):
            for lam, means, counts in ((kld_lambda_1, edge, edge_count), (kld_lambda_2, not_edge, not_edge_count)):
                count = tf.cast(counts[index], tf.float32)
                ratios.append((dec * lam * means[index] * count, count))
        total = ratios
    else:
        total = dec * tf.reduce_sum(kld_lambda_1 * edge + kld_lambda_2 * not_edge)
    if stats is not None:
        for index, size in enumerate(sizes):
            stats[f'edge_mean_s{size}'] = edge[index]
            stats[f'not_edge_mean_s{size}'] = not_edge[index]
            stats[f'edge_count_s{size}'] = edge_count[index]
            stats[f'not_edge_count_s{size}'] = not_edge_count[index]
        stats['dec'] = dec
    return {name: total}
