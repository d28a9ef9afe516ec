"""Learning-rate schedules of the originals.

AAF / SegSort (aaf_segsort.md 4.6): `lr(step) = base_lr * (1 - step/num_steps)^power`, step = the Python loop index
0..num_steps-1, so the first step runs at `base_lr` and the LR never reaches 0.
PSA / A2GNN `PolyOptimizer` (psa_a2gnn.md 8.1): the same formula with power 0.9 over `max_step`, applied only while
`step < max_step`; after that the LR stays at the last value it had ("frozen").
"""


def poly_lr(base_lr, step, num_steps, power=0.9, freeze_after_end=False):
    """Poly learning rate.

    Args:
      base_lr: float, the LR at step 0 (times a group's multiplier where groups exist).
      step: int/float or scalar tensor, 0-based loop index.
      num_steps: int, the schedule length (AAF `--num-steps`, PSA `max_step`).
      power: float, the poly exponent (AAF `--power`, PSA `PolyOptimizer.momentum`).
      freeze_after_end: False = evaluate the formula for every step (AAF; a step >= num_steps would give 0 or a
        complex number, which the AAF loop never reaches). True = PSA: steps >= num_steps keep the LR of step
        num_steps-1.
    Returns:
      float (or a tensor if `step` is one).
    """
    if num_steps <= 0:
        raise ValueError(f'num_steps must be positive, got {num_steps}')
    if freeze_after_end:
        if isinstance(step, (int, float)):
            step = min(step, num_steps - 1)
        else:
            import tensorflow as tf
            step = tf.minimum(tf.cast(step, tf.float32), float(num_steps - 1))
    return base_lr * (1.0 - step / num_steps) ** power


def affinity_decay(step, num_steps):
    """AAF's decay of the affinity terms, `10^(-step/num_steps)` (1 at step 0, ~0.1 at the end; aaf_segsort.md 4.4).

    Args:
      step: int/float or scalar float tensor (the loop index the engine passes to `loss_fn` as `step`).
      num_steps: int.
    """
    return 10.0 ** (-step / num_steps)
