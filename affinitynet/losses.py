"""AffinityNet loss (PSA `train_aff.py`): bg/4 + fg/4 + neg/2 with counts summed over the whole batch."""
import tensorflow as tf

EPS = 1e-5


def affinity_loss(aff, bg, fg, neg):
    """Cross-entropy of pair affinities against the bg / fg / neg pair masks.

    Args:
      aff: float [N, D, P] affinities in (0, 1]; bg, fg, neg: float [N, D, P] 0/1 masks.
    Returns:
      dict: loss, bg_loss, fg_loss, neg_loss (scalars), bg_count, fg_count, neg_count (batch sums + 1e-5).
    """
    aff = tf.convert_to_tensor(aff, tf.float32)
    bg, fg, neg = (tf.convert_to_tensor(x, tf.float32) for x in (bg, fg, neg))
    bg_count = tf.reduce_sum(bg) + EPS
    fg_count = tf.reduce_sum(fg) + EPS
    neg_count = tf.reduce_sum(neg) + EPS
    log_pos = tf.math.log(aff + EPS)
    bg_loss = tf.reduce_sum(-bg * log_pos) / bg_count
    fg_loss = tf.reduce_sum(-fg * log_pos) / fg_count
    neg_loss = tf.reduce_sum(-neg * tf.math.log(1. + EPS - aff)) / neg_count
    loss = bg_loss / 4 + fg_loss / 4 + neg_loss / 2
    return {'loss': loss, 'bg_loss': bg_loss, 'fg_loss': fg_loss, 'neg_loss': neg_loss,
            'bg_count': bg_count, 'fg_count': fg_count, 'neg_count': neg_count}


def multilabel_soft_margin_loss(logits, labels):
    """torch `multilabel_soft_margin_loss`: mean over batch and classes of the sigmoid cross-entropy.

    Args:
      logits: float [N, C]; labels: float [N, C] multi-hot.
    """
    labels = tf.convert_to_tensor(labels, tf.float32)
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))
