"""Optimizers with the originals' exact update rules, variable groups and LR multipliers.

Why not Keras optimizers: Keras SGD keeps `v = m*v - lr*g` (the LR is folded into the velocity), which differs from
TF1's `MomentumOptimizer` as soon as the LR changes every step (poly schedule, aaf_segsort.md Q-A19); Keras Adam
puts epsilon differently from PyTorch (psa_a2gnn.md 11). The classes here implement the originals' rules literally:

* `TF1Momentum` (AAF, SegSort):   acc = m*acc + g;            w -= lr*acc          (non-Nesterov)
* `TorchSGD` (PSA `PolyOptimizer`): buf = m*buf + (g + wd*w); w -= lr*buf          (dampening 0, buf = g at step 1)
* `TorchAdam` (A2GNN):            g += wd*w; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
                                  w -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)

Each optimizer serves several `VariableGroup`s (one optimizer object replaces the originals' one-optimizer-per-group:
slots are per variable, so the result is the same). A group selects variables by original name
(`common.models.naming.original_name`), by predicate or by identity, and carries an LR multiplier, an optional
momentum / weight-decay override and an `ascent` flag (gradient ASCENT: the gradient is negated, as for AAF's
adversarial `edge_w` / `nonedge_w`). The first matching group wins; unmatched variables go to the default group
('base', lr x1).

Distribution: `build()` must run inside `strategy.scope()` (the engine does this) so that slots are mirrored like
their variables; `apply_gradients` may be called in a replica context (inside `strategy.run`): it merges, SUMs the
per-replica gradients (losses are already scaled by the global batch) and applies the same update on every replica.
Slots and the step counter are tracked attributes, so `tf.train.Checkpoint(optimizer=opt)` saves and restores them;
slots are keyed by the variable's original name (stable across runs and strategies).
"""
import dataclasses
import types
from typing import Callable, Optional, Sequence, Tuple, Union

import tensorflow as tf

from common.models.naming import original_name


def unwrap_variable(variable):
    """The `tf.Variable` (possibly a distributed one) behind a Keras 3 variable; tf.Variables pass through."""
    import keras
    if isinstance(variable, keras.Variable):
        return variable.value
    return variable


@dataclasses.dataclass(frozen=True)
class VariableGroup:
    """A set of trainable variables sharing LR multiplier / momentum / weight decay / ascent.

    Attributes:
      name: group name (used in messages and summaries).
      contains: a substring or tuple of substrings; a variable matches if its original name contains ANY of them.
      predicate: optional callable(original_name) -> bool (alternative to `contains`).
      variables: optional explicit variables (matched by identity), e.g. AAF's adversarial weights.
      lr_mult: multiplier on the scheduled LR (AAF block5: 10; PSA: 1/2/10/20).
      ascent: True negates the gradient (gradient ascent).
      momentum: overrides the optimizer's momentum for this group (None = optimizer default).
      weight_decay: coupled weight decay for the PyTorch optimizers (None = optimizer default; ignored by
        `TF1Momentum`, whose originals add the L2 term to the loss instead).
    """
    name: str
    contains: Union[str, Tuple[str, ...]] = ()
    predicate: Optional[Callable[[str], bool]] = None
    variables: Tuple = ()
    lr_mult: float = 1.0
    ascent: bool = False
    momentum: Optional[float] = None
    weight_decay: Optional[float] = None

    def matches(self, variable):
        """True if `variable` belongs to this group."""
        target = unwrap_variable(variable)
        if any(unwrap_variable(v) is target for v in self.variables):
            return True
        name = original_name(variable)
        substrings = (self.contains,) if isinstance(self.contains, str) else tuple(self.contains)
        if any(s in name for s in substrings):
            return True
        return self.predicate is not None and bool(self.predicate(name))


DEFAULT_GROUP = VariableGroup('base')


def aaf_variable_groups(adversarial_variables=(), momentum=None):
    """AAF / SegSort groups (aaf_segsort.md 4.6): 'block5' in the name -> lr x10 ('fc'); the adversarial
    variables -> lr x1 with gradient ascent ('edge'); everything else -> 'base' (lr x1, the default group).

    Args:
      adversarial_variables: AAF's `edge_w`, `nonedge_w` (matched by identity), or () for train.py / SegSort.
      momentum: optional momentum override for the edge group (the original uses the same 0.9).
    """
    groups = []
    if adversarial_variables:
        groups.append(VariableGroup('edge', variables=tuple(adversarial_variables), lr_mult=1.0, ascent=True,
                                    momentum=momentum))
    groups.append(VariableGroup('fc', contains='block5', lr_mult=10.0))
    return groups


def psa_parameter_groups(from_scratch_prefixes, weight_decay):
    """PSA / A2GNN parameter groups (psa_a2gnn.md 8.2), on PyTorch-style original names ('fc8.weight', ...).

    0: backbone weights lr x1, wd; 1: backbone biases lr x2, wd 0; 2: from-scratch weights lr x10, wd;
    3: from-scratch biases lr x20, wd 0. Frozen (non-trainable) variables never reach the optimizer, which matches
    the original (their grads are None and torch skips them). The returned list has group 0 last, as a catch-all.

    Args:
      from_scratch_prefixes: original-name prefixes of the new layers, e.g. ('fc8',) or ('f8_3','f8_4','f8_5','f9').
      weight_decay: float (5e-4).
    """
    prefixes = tuple(from_scratch_prefixes)

    def is_scratch(name):
        return name.startswith(prefixes)

    def is_bias(name):
        return name.endswith('bias')

    return [
        VariableGroup('scratch_bias', predicate=lambda n: is_scratch(n) and is_bias(n), lr_mult=20.0,
                      weight_decay=0.0),
        VariableGroup('scratch_weight', predicate=is_scratch, lr_mult=10.0, weight_decay=weight_decay),
        VariableGroup('backbone_bias', predicate=is_bias, lr_mult=2.0, weight_decay=0.0),
        VariableGroup('backbone_weight', predicate=lambda n: True, lr_mult=1.0, weight_decay=weight_decay),
    ]


def assign_groups(variables, groups, default_group=DEFAULT_GROUP):
    """Maps each variable to the first group that matches it (else `default_group`).

    Returns:
      list of VariableGroup, aligned with `variables`.
    """
    return [next((g for g in groups if g.matches(v)), default_group) for v in variables]


class GroupedOptimizer(tf.Module):
    """Base class: slots per variable, groups, a step counter, distribution-aware `apply_gradients`.

    Subclasses define `slot_names` and `_update(var, grad, lr, slots, group)` (per-device tensors / variables).
    """
    slot_names: Sequence[str] = ()

    def __init__(self, groups=(), default_group=DEFAULT_GROUP, name=None):
        super().__init__(name=name)
        self.groups = list(groups)
        self.default_group = default_group
        self._built = False

    def build(self, variables):
        """Creates the slots (zeros) and the step counter; call inside `strategy.scope()`.

        Args:
          variables: the trainable variables, in a fixed order (model's, then extras).
        """
        if self._built:
            raise RuntimeError(f'{type(self).__name__}.build() called twice')
        strategy = tf.distribute.get_strategy()
        # Bookkeeping lives in a plain namespace: tf.Module would otherwise track (and checkpoint) a second copy
        # of every model variable and slot.
        unwrapped = [unwrap_variable(v) for v in variables]
        self._state = types.SimpleNamespace(variables=unwrapped, slots_by_index=[],
                                            index={id(v): i for i, v in enumerate(unwrapped)},
                                            groups=assign_groups(variables, self.groups, self.default_group))
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name='iterations',
                                      aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        # A dict keyed by original name: tracked by tf.train.Checkpoint under readable, stable keys.
        self.slots = {}
        for variable, var in zip(variables, unwrapped):
            name = original_name(variable)
            per_var = []
            for slot_name in self.slot_names:
                with strategy.extended.colocate_vars_with(var):
                    slot = tf.Variable(tf.zeros(var.shape, var.dtype), trainable=False,
                                       name=f'{name.replace(":", "_")}/{slot_name}')
                key = f'{name}/{slot_name}'
                if key in self.slots:
                    raise ValueError(f'two trainable variables share the original name {name!r}')
                self.slots[key] = slot
                per_var.append(slot)
            self._state.slots_by_index.append(per_var)
        self._built = True

    def group_of(self, variable):
        """The VariableGroup of a built variable."""
        return self._state.groups[self._state.index[id(unwrap_variable(variable))]]

    @property
    def variable_groups(self):
        """The VariableGroup of each built variable, in build order."""
        return list(self._state.groups)

    def apply_gradients(self, grads_and_vars, learning_rate):
        """Applies one update with the scheduled LR (each group multiplies it by its `lr_mult`).

        Args:
          grads_and_vars: iterable of (gradient or None, variable); None gradients are skipped (like TF1/torch).
          learning_rate: scalar float (tensor), the scheduled base LR of this step.
        """
        if not self._built:
            raise RuntimeError(f'{type(self).__name__}: call build(variables) inside strategy.scope() first')
        grads = [None] * len(self._state.variables)
        for grad, var in grads_and_vars:
            key = id(unwrap_variable(var))
            if key not in self._state.index:
                raise ValueError(f'variable {original_name(var)!r} was not passed to build()')
            grads[self._state.index[key]] = grad
        learning_rate = tf.convert_to_tensor(learning_rate, tf.float32)
        if tf.distribute.in_cross_replica_context():
            return self._distributed_apply(tf.distribute.get_strategy(), grads, learning_rate)
        return tf.distribute.get_replica_context().merge_call(self._distributed_apply,
                                                              args=(grads, learning_rate))

    def _distributed_apply(self, strategy, grads, learning_rate):
        present = [i for i, g in enumerate(grads) if g is not None]
        reduced = strategy.extended.batch_reduce_to(
            tf.distribute.ReduceOp.SUM, [(grads[i], self._state.variables[i]) for i in present]) if present else []
        step = tf.cast(self.iterations + 1, tf.float32)  # 1-based, for bias corrections
        updates = []
        for i, grad in zip(present, reduced):
            group = self._state.groups[i]
            lr = learning_rate * group.lr_mult
            updates.append(strategy.extended.update(
                self._state.variables[i], self._update_fn(group, step), args=(grad, lr, *self._state.slots_by_index[i]),
                group=False))
        with tf.control_dependencies(tf.nest.flatten(updates)):
            return self.iterations.assign_add(1)

    def _update_fn(self, group, step):
        def fn(var, grad, lr, *slots):
            grad = tf.convert_to_tensor(grad)
            if group.ascent:
                grad = -grad
            return self._update(var, tf.cast(grad, var.dtype), tf.cast(lr, var.dtype), slots, group, step)
        return fn

    def _update(self, var, grad, lr, slots, group, step):
        raise NotImplementedError


class TF1Momentum(GroupedOptimizer):
    """`tf.compat.v1.train.MomentumOptimizer(lr, momentum)` semantics: acc = m*acc + g; w -= lr*acc.

    Args:
      momentum: float (AAF `--momentum`, 0.9); a group's `momentum` overrides it.
      groups: list of VariableGroup (e.g. `aaf_variable_groups(...)`).
    """
    slot_names = ('momentum',)

    def __init__(self, momentum=0.9, groups=(), default_group=DEFAULT_GROUP, name='TF1Momentum'):
        super().__init__(groups, default_group, name)
        self.momentum = momentum

    def _update(self, var, grad, lr, slots, group, step):
        (acc,) = slots
        m = self.momentum if group.momentum is None else group.momentum
        new_acc = acc.assign(m * acc + grad)
        return var.assign_sub(lr * new_acc)


class TorchSGD(GroupedOptimizer):
    """`torch.optim.SGD(params, lr, momentum, dampening=0, weight_decay, nesterov=False)` semantics.

    g' = g + wd*w; buf = m*buf + g' (buf = g' at the first step, which a zero-initialised buffer gives exactly
    because dampening is 0); w -= lr*buf. With momentum 0 no buffer is used (w -= lr*g').

    Args:
      momentum: float. NB PSA's `PolyOptimizer` passes weight_decay positionally as SGD's momentum, so its
        faithful momentum is 5e-4, not 0.9 (psa_a2gnn.md 8.1); see `poly_optimizer`.
      weight_decay: default coupled weight decay; groups may override it (PSA: 0 for biases).
    """
    slot_names = ('momentum_buffer',)

    def __init__(self, momentum=0.0, weight_decay=0.0, groups=(), default_group=DEFAULT_GROUP, name='TorchSGD'):
        super().__init__(groups, default_group, name)
        self.momentum = momentum
        self.weight_decay = weight_decay

    def _update(self, var, grad, lr, slots, group, step):
        (buf,) = slots
        m = self.momentum if group.momentum is None else group.momentum
        wd = self.weight_decay if group.weight_decay is None else group.weight_decay
        if wd:
            grad = grad + wd * tf.convert_to_tensor(var)
        if not m:
            return var.assign_sub(lr * grad)
        new_buf = buf.assign(m * buf + grad)
        return var.assign_sub(lr * new_buf)


class TorchAdam(GroupedOptimizer):
    """`torch.optim.Adam(params, lr, betas, eps=1e-8, weight_decay)` semantics (coupled L2, not AdamW).

    The bias-correction step t is the optimizer's step count (torch counts per parameter; identical whenever every
    variable receives a gradient at every step, as in A2GNN's per-image GNN training).
    """
    slot_names = ('exp_avg', 'exp_avg_sq')

    def __init__(self, beta_1=0.9, beta_2=0.999, epsilon=1e-8, weight_decay=0.0, groups=(),
                 default_group=DEFAULT_GROUP, name='TorchAdam'):
        super().__init__(groups, default_group, name)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.weight_decay = weight_decay

    def _update(self, var, grad, lr, slots, group, step):
        exp_avg, exp_avg_sq = slots
        wd = self.weight_decay if group.weight_decay is None else group.weight_decay
        if wd:
            grad = grad + wd * tf.convert_to_tensor(var)
        b1, b2 = self.beta_1, self.beta_2
        m = exp_avg.assign(b1 * exp_avg + (1.0 - b1) * grad)
        v = exp_avg_sq.assign(b2 * exp_avg_sq + (1.0 - b2) * tf.square(grad))
        step = tf.cast(step, var.dtype)
        bias_correction1 = 1.0 - tf.pow(tf.cast(b1, var.dtype), step)
        bias_correction2 = 1.0 - tf.pow(tf.cast(b2, var.dtype), step)
        denom = tf.sqrt(v) / tf.sqrt(bias_correction2) + self.epsilon
        return var.assign_sub((lr / bias_correction1) * m / denom)


def poly_optimizer(weight_decay, from_scratch_prefixes=(), momentum=0.9, intended_momentum=False):
    """The optimizer of PSA's `PolyOptimizer(params, lr, weight_decay, max_step, momentum=0.9)`.

    Pair it with `schedules.poly_lr(lr, step, max_step, power=momentum, freeze_after_end=True)`.

    Args:
      weight_decay: float (5e-4); also the SGD momentum in the faithful mode.
      from_scratch_prefixes: original-name prefixes of the x10/x20 layers (see `psa_parameter_groups`).
      momentum: the original's `momentum` argument, which is only the poly power.
      intended_momentum: False (faithful) = SGD momentum equals `weight_decay` (positional-argument quirk,
        psa_a2gnn.md 10.1); True = SGD momentum equals `momentum` (what the authors presumably meant).
    """
    groups = psa_parameter_groups(from_scratch_prefixes, weight_decay) if from_scratch_prefixes is not None else ()
    sgd_momentum = momentum if intended_momentum else weight_decay
    return TorchSGD(momentum=sgd_momentum, weight_decay=weight_decay, groups=groups)


def make_optimizer(name, momentum=0.9, weight_decay=0.0, groups=()):
    """Optimizer by name: 'tf1_momentum' | 'torch_sgd' | 'torch_adam' (for CLIs)."""
    if name == 'tf1_momentum':
        return TF1Momentum(momentum=momentum, groups=groups)
    if name == 'torch_sgd':
        return TorchSGD(momentum=momentum, weight_decay=weight_decay, groups=groups)
    if name == 'torch_adam':
        return TorchAdam(weight_decay=weight_decay, groups=groups)
    raise ValueError(f"--optimizer: unknown optimizer {name!r}; use 'tf1_momentum', 'torch_sgd' or 'torch_adam'")
