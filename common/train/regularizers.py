"""The originals' L2 weight-decay term (aaf_segsort.md 4.4).

AAF / SegSort add `weight_decay * sum(tf.nn.l2_loss(v))` = `weight_decay * sum(v^2) / 2` over the trainable variables
whose (TF1) name contains 'weights' -- the conv kernels, block5 included; biases, BN parameters and the AAF
adversarial edge weights are excluded. Selection uses `common.models.naming.original_name`.
(PSA / A2GNN use coupled weight decay inside the PyTorch optimizers instead; see `optimizers.py`.)
"""
import tensorflow as tf

from common.models.naming import original_name


def weights_name_filter(name):
    """The original rule: a variable is regularised iff 'weights' occurs in its original name."""
    return 'weights' in name


def l2_variables(variables, name_filter=weights_name_filter):
    """The variables the L2 term covers, in the given order.

    Args:
      variables: iterable of (trainable) variables.
      name_filter: callable(original_name) -> bool, or a substring.
    """
    if isinstance(name_filter, str):
        substring = name_filter
        name_filter = lambda name: substring in name  # noqa: E731
    return [v for v in variables if name_filter(original_name(v))]


def l2_loss(variables, weight_decay, name_filter=weights_name_filter):
    """`weight_decay * sum(v^2)/2` over the selected variables, float32.

    Args:
      variables: iterable of trainable variables (model + extras).
      weight_decay: float (AAF `--weight-decay`, 5e-4).
      name_filter: callable(original_name) -> bool or a substring; default: 'weights' in the name.
    Returns:
      scalar float32 tensor (0.0 when nothing is selected).
    """
    selected = l2_variables(variables, name_filter)
    if not selected or not weight_decay:
        return tf.constant(0.0, tf.float32)
    terms = [tf.nn.l2_loss(tf.cast(tf.convert_to_tensor(v), tf.float32)) for v in selected]
    return tf.cast(weight_decay, tf.float32) * tf.add_n(terms)
