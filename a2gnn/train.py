"""Per-image GNN training of A2GNN (`mytool.train_with_*`, box.py / others.py main loops).

The `*_loss` functions compute the loss of one step from the GNN outputs (x: [N, C] logits, fts: [N, F]
features, node-major); `train_gnn` runs the two phases of a mode with PyTorch-Adam semantics.
"""
import numpy as np
import tensorflow as tf

from a2gnn.gated_crf import create_kernels, potts_loss, window_matrix
from a2gnn.losses import (GATED_CRF_KERNELS, IGNORE_LABEL, box_mp_loss_from_nodes, node_logits_to_image,
                          split_ce_from_nodes, split_ce_from_pred, split_ce_loss)
from a2gnn.model import A2GNN
from common.train.optimizers import TorchAdam

GATED_CRF_RADIUS = 5
CRF_WEIGHT_OTHERS = 0.3
CRF_WEIGHT_BOX = 0.01


def potts_crf_terms(sample, f_h, f_w):
    """What the GNN's gated CRF loss needs from the image, constant across the steps of one image: (window
    kernel matrix, sum of the kernels, denominator) of `a2gnn.gated_crf.potts_loss` (the original rebuilds the
    kernels every step).

    Args:
      sample: {'rgb': [1, f_h, f_w, 3]} normalised image.
    """
    kernels = create_kernels(list(GATED_CRF_KERNELS), GATED_CRF_RADIUS, sample, 1, f_h, f_w)
    return window_matrix(kernels), tf.reduce_sum(kernels), tf.constant(float(f_h * f_w))


def _potts_crf(x, f_h, f_w, sample, crf_terms=None):
    y = tf.nn.softmax(tf.reshape(tf.convert_to_tensor(x, tf.float32), (1, f_h, f_w, -1)), axis=-1)
    return potts_loss(y, *(crf_terms or potts_crf_terms(sample, f_h, f_w)))


def train_with_nocrf_loss(x, seed, f_h, f_w):
    """Phase 1 of image/point/scribble: bg + fg split CE. Returns dict loss, bg_loss, fg_loss, pred."""
    loss, bg_loss, fg_loss, pred = split_ce_loss(x, seed, f_h, f_w)
    return {'loss': loss, 'bg_loss': bg_loss, 'fg_loss': fg_loss, 'pred': pred}


def train_with_crf_loss(x, seed, f_h, f_w, sample, crf_weight=CRF_WEIGHT_OTHERS, crf_terms=None):
    """Phase 2 of image/point/scribble: bg + fg + 0.3 * gated CRF (Potts, radius 5, xy 6, rgb 0.1).

    Args:
      x: [f_h*f_w, C] logits; seed: [1, H, W]; sample: {'rgb': [1, f_h, f_w, 3]} normalised image.
      crf_terms: optional `potts_crf_terms(sample, f_h, f_w)`, computed once per image by the trainer.
    Returns:
      dict loss, bg_loss, fg_loss, crf_loss (unweighted), pred.
    """
    loss, bg_loss, fg_loss, pred = split_ce_loss(x, seed, f_h, f_w)
    crf_loss = _potts_crf(x, f_h, f_w, sample, crf_terms)
    return {'loss': loss + crf_weight * crf_loss, 'bg_loss': bg_loss, 'fg_loss': fg_loss, 'crf_loss': crf_loss,
            'pred': pred}


def _box_step(x, fts, seed, f_h, f_w, boxes, box_class):
    seed = tf.convert_to_tensor(seed)
    size = (int(seed.shape[1]), int(seed.shape[2]))
    pred = node_logits_to_image(x, f_h, f_w, size)
    # The original upsamples the 256-d features to the full seed size; only the selected pixels are needed.
    box_loss, seed_after = box_mp_loss_from_nodes(pred, fts, f_h, f_w, boxes, box_class, seed)
    # The original edits the seed in place before splitting it, so the CE already sees the edited seed.
    bg_loss, fg_loss = split_ce_from_pred(pred, seed_after)
    return pred, box_loss, seed_after, bg_loss, fg_loss


def train_with_mp_nocrf_loss(x, fts, seed, f_h, f_w, boxes, box_class):
    """Phase 1 of box: bg + fg + box MIL/consistency loss.

    Returns:
      dict loss, bg_loss, fg_loss, box_loss, pred, seed_after (the seed after the consistency check, which the
      original keeps for the following steps).
    """
    pred, box_loss, seed_after, bg_loss, fg_loss = _box_step(x, fts, seed, f_h, f_w, boxes, box_class)
    return {'loss': bg_loss + fg_loss + box_loss, 'bg_loss': bg_loss, 'fg_loss': fg_loss, 'box_loss': box_loss,
            'pred': pred, 'seed_after': seed_after}


def train_with_mp_crf_loss(x, fts, seed, f_h, f_w, sample, boxes, box_class, crf_weight=CRF_WEIGHT_BOX,
                           crf_terms=None):
    """Phase 2 of box: bg + fg + 0.01 * gated CRF + box loss. Returns the dict of phase 1 plus crf_loss."""
    pred, box_loss, seed_after, bg_loss, fg_loss = _box_step(x, fts, seed, f_h, f_w, boxes, box_class)
    crf_loss = _potts_crf(x, f_h, f_w, sample, crf_terms)
    return {'loss': bg_loss + fg_loss + crf_weight * crf_loss + box_loss, 'bg_loss': bg_loss, 'fg_loss': fg_loss,
            'crf_loss': crf_loss, 'box_loss': box_loss, 'pred': pred, 'seed_after': seed_after}


def _others_step_loss(x, seed, f_h, f_w, sample, with_crf, crf_terms, crf_weight=CRF_WEIGHT_OTHERS):
    """The trainer's form of `train_with_nocrf_loss` / `train_with_crf_loss` (same loss, no full-resolution
    prediction kept: `split_ce_from_nodes`). Returns the dicts of those functions without 'pred'."""
    bg_loss, fg_loss = split_ce_from_nodes(x, seed, f_h, f_w)
    out = {'loss': bg_loss + fg_loss, 'bg_loss': bg_loss, 'fg_loss': fg_loss}
    if with_crf:
        out['crf_loss'] = _potts_crf(x, f_h, f_w, sample, crf_terms)
        out['loss'] += crf_weight * out['crf_loss']
    return out


def compiled_update(optimizer, variables):
    """`optimizer.apply_gradients` for `variables` as one XLA program: each variable's update (weight decay,
    both moments, the step) fuses into one loop writing the slots and the variable in place, where the op-by-op
    update holds several variable-sized temporaries (~28 MB for A2GNN's embedding). Same arithmetic.

    Returns:
      update(grads, learning_rate), callable inside a tf.function.
    """
    @tf.function(jit_compile=True, autograph=False)
    def update(grads, learning_rate):
        return optimizer.apply_gradients(zip(grads, variables), learning_rate)
    return update


MODES = ('box', 'others')
PHASE_LOSSES = {'box': ('mp_nocrf', 'mp_crf'), 'others': ('nocrf', 'crf')}


def _log_empty_terms(seed, log):
    seed = np.asarray(seed)
    if not np.any(seed == 0):
        log('seed has no background pixel: the background term is skipped (the original gives NaN)')
    if not np.any((seed != 0) & (seed != IGNORE_LABEL)):
        log('seed has no foreground pixel: the foreground term is skipped (the original gives NaN)')


def train_gnn(x, graph, seed, f_h, f_w, mode, sample=None, boxes=None, box_class=None, epochs=50, lr=0.03,
              weight_decay=5e-4, hidden=256, dropout=0.5, num_class=21, random_seed=0, aff_cropping=None,
              log=print):
    """Trains a fresh A2GNN on one image: `epochs` steps of phase 1 then `epochs` of phase 2 with one
    PyTorch-semantics Adam (coupled L2) shared by both phases, as box.py / others.py.

    Args:
      x: [N, F] node features; graph: NeighbourGraph (or dense adj [N, N] with aff_cropping).
      seed: [1, 8 f_h, 8 f_w] padded seed (255 padding for box, 0 for others).
      mode: 'box' (phases mp_nocrf, mp_crf; needs boxes, box_class) or 'others' (nocrf, crf).
      sample: {'rgb': [1, f_h, f_w, 3]} for the gated CRF of phase 2.
    Returns:
      (model, history): the trained A2GNN and a list of per-step loss dicts (floats).
    """
    if mode not in MODES:
        raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
    _log_empty_terms(seed, log)
    model = A2GNN(int(x.shape[1]), hidden, num_class, 3, dropout, seed=random_seed)
    optimizer = TorchAdam(weight_decay=weight_decay)
    optimizer.build(model.weights)
    update = compiled_update(optimizer, model.weights)
    x = tf.convert_to_tensor(x, tf.float32)
    # Box steps edit the seed (kept int64 like the original's LongTensor); the others only read it.
    seed = tf.convert_to_tensor(np.asarray(seed, np.int64 if mode == 'box' else np.int32))
    # Constant per image: built once, not per step.
    crf_terms = None if sample is None else potts_crf_terms(sample, f_h, f_w)
    history = []

    # One graph for both phases: phase 1 is phase 2 with the gated CRF term weighted 0 (the loss and the
    # gradients are then exactly phase 1's: + 0 * finite), so the step is traced and optimised once.
    with_crf = crf_terms is not None
    crf_weight = CRF_WEIGHT_BOX if mode == 'box' else CRF_WEIGHT_OTHERS

    def step(seed, weight):
        # Without autograph: the code has only Python control flow, and converting it took most of the tracing
        # time (eager ops would cost ~1 s a step on CPU).
        with tf.GradientTape() as tape:
            logits, fts = model(x, graph, aff_cropping, training=True)
            if mode == 'others':
                out = _others_step_loss(logits, seed, f_h, f_w, sample, with_crf, crf_terms, weight)
            elif with_crf:
                out = train_with_mp_crf_loss(logits, fts, seed, f_h, f_w, sample, boxes, box_class,
                                             crf_weight=weight, crf_terms=crf_terms)
            else:
                out = train_with_mp_nocrf_loss(logits, fts, seed, f_h, f_w, boxes, box_class)
        grads = tape.gradient(out['loss'], model.weights)
        update(grads, lr)
        # The full-resolution prediction is not returned: it would stay alive until the next step.
        return {key: value for key, value in out.items() if key != 'pred'}

    compiled = tf.function(step, autograph=False)
    for phase_index, phase in enumerate(PHASE_LOSSES[mode]):
        if phase_index and not with_crf:
            raise ValueError(f'phase {phase} needs sample (the image for the gated CRF)')
        weight = tf.constant(crf_weight if phase_index else 0.0)
        for _ in range(epochs):
            out = compiled(seed, weight)
            if 'seed_after' in out:  # the original's in-place seed edit persists
                seed = out['seed_after']
            loss = float(out['loss'])
            if not np.isfinite(loss):
                raise FloatingPointError(f'GNN loss is {loss} in phase {phase}: training stopped')
            history.append({k: float(v) for k, v in out.items() if np.ndim(v) == 0
                            and (phase_index or k != 'crf_loss')})
    return model, history
