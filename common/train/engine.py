"""The generic training engine behind the AAF / SegSort (and PSA-style) training CLIs.

CONTRACT -- what a method's CLI supplies
----------------------------------------
1. A strategy: `strategy = strategy_from_flags(FLAGS.num_gpu, FLAGS.strategy)` (common.train.strategy), made
   FIRST: `--strategy multi_worker` must configure the runtime before anything lists devices or builds a model.
   Under it only the chief writes checkpoints, summaries and the config (`is_chief`); the other workers save to
   `<snapshot_dir>/workertemp_<i>` (deleted after each save) and resume from the chief's checkpoints.
2. A model (and any extra variables) CREATED INSIDE `strategy.scope()`. Every variable needs a unique original name
   (`common.models.naming.set_original_name`, or a Keras path / tf.Variable name): LR groups, the L2 rule and
   checkpoints select variables by it. Seed first (`keras.utils.set_random_seed(FLAGS.random_seed)`) for
   reproducible initial weights.
3. `loss_fn(model, batch, training, step) -> terms` or `-> (terms, logits)`, called once per replica on the replica's
   batch inside a `tf.function`:
     * `step` (optional parameter: passed only if `loss_fn` accepts it) is the float32 loop index 0..num_steps-1
       (AAF's `dec = 10^(-step/num_steps)`, `schedules.affinity_decay`).
     * `terms` is a dict name -> loss (order kept; names become TensorBoard scalars). A loss is either
         - a scalar = the mean over the REPLICA's images (e.g. a per-image mean); the engine weights it by
           local_batch/global_batch, so the sum over replicas is the global-batch mean; or
         - a pair `(numerator, denominator)`, e.g. (sum of pixel CE, number of valid pixels). With
           `loss_reduction='global_mean'` (default) the engine divides by the denominator summed over ALL replicas,
           which equals the single-device loss on the global batch exactly; with 'tower_mean' it is
           numerator/denominator weighted by local_batch/global_batch, i.e. the originals' multi-GPU
           image-weighted mean of per-tower means (aaf_segsort.md 4.5, Q-A16); or
         - a LIST of pairs `[(numerator_1, denominator_1), ...]`: the sum of the ratios, each reduced as a pair
           (AAF: one (weighted edge sum, edge count) ratio per size and edge / non-edge set). A ratio whose
           denominator is 0 over all replicas (tower_mean: on the replica) contributes 0 (NaN stays NaN), where a
           plain pair would give 0/0 = NaN.
       Terms are cast to float32 (mixed precision). Do NOT add L2: the engine adds
       `l2_loss = weight_decay * sum(kernel^2)/2` over trainable variables whose original name contains
       `config.l2_name_filter` ('weights'), once per global step (`config.l2_loss=False` to disable, e.g. with the
       PyTorch optimizers' coupled weight decay).
     * `logits` [N,h,w,C] (optional) feed the 'images' summary: input | label | prediction.
   A loss that needs the whole global batch (SegSort multi-GPU computes one loss on all towers' embeddings) can
   `tf.distribute.get_replica_context().all_gather(x, axis=0)` and return that global loss as a plain scalar: the
   weights n_r/n sum to 1 over replicas and all_gather's gradient sums the replicas' contributions, so the update
   is the single-device one.
4. `dataset_fn(input_context) -> tf.data.Dataset` yielding PER-REPLICA batches
   (`input_context.get_per_replica_batch_size(global_batch)`), repeated forever. Batches are dicts (image summaries
   use keys 'image' [N,H,W,3] mean-subtracted and 'label' [N,H,W(,1)]) or tuples (image, label, ...). For exact
   kill-and-resume the dataset must be deterministic given its seeds (explicit op seeds, `deterministic=True` maps):
   on resume the engine calls `dataset_fn(ctx).skip(batches already consumed)`.
5. Variable groups (`optimizers.VariableGroup`): name -> lr multiplier / ascent / momentum / weight decay.
   AAF: `aaf_variable_groups([edge_w, nonedge_w])` = block5 x10, adversarial weights x1 with gradient ASCENT,
   the rest x1. Extra variables (`extra_variables=[...]`) are trained and checkpointed but never restored by
   `--restore-from` (Q-A9), never part of the L2 term unless their name matches the filter.
6. A `TrainConfig` (the flags): num_steps, learning_rate, power, momentum, weight_decay, iter_size,
   accumulate_gradients, save_pred_every, update_tb_every, snapshot_dir, restore_from, exclude_scopes
   (`--not-restore-classifier` -> ('block5',)), loss_reduction, max_to_keep, optimizer, mixed_precision, ...

What the engine does per step (step = 0..num_steps-1, as the originals' loop):
  lr = poly(step) (AAF form; `freeze_lr_after_end` for PSA); `iter_size` times (faithful, Q-A6): take a new batch,
  forward (BN moving averages update), loss, gradients, one optimizer update at the same lr. With
  `accumulate_gradients=True` the iter_size gradients are averaged and applied once instead. Losses are checked:
  a NaN/Inf stops training with `NonFiniteLossError` naming the step and term, before anything is saved. Summaries
  when `step % update_tb_every == 0` (last iteration), checkpoint `model.ckpt-<step>` when
  `step % save_pred_every == 0 and step > 0` (and at the end if `save_last`). tqdm shows loss and lr.

Start-up: if `snapshot_dir` already holds a checkpoint, the run RESUMES from it (weights, optimizer slots, step,
data position; `restore_from` is then ignored). Otherwise `restore_from` (if set) initialises the model variables by
original name minus `exclude_scopes` (Slim ImageNet checkpoints via `common.weights.slim`). The flags are written to
`<snapshot_dir>/config` and `config.json`.

Usage (the AAF CLI, abridged)::

    strategy = strategy_from_flags(FLAGS.num_gpu, FLAGS.strategy)
    keras.utils.set_random_seed(FLAGS.random_seed)
    with strategy.scope():
        model = build_pspnet(FLAGS.num_classes, input_size, synchronized=True, ...)
        edge_w = tf.Variable(tf.zeros([1, 1, 1, C, 1, 3]), name='edge_w')
        nonedge_w = tf.Variable(tf.zeros([1, 1, 1, C, 1, 3]), name='nonedge_w')

    def loss_fn(model, batch, training, step):
        logits = model(batch['image'], training=training)
        ce_sum, n_valid = ...                      # pixel CE over labels <= C-1
        aaf = ...                                  # uses edge_w / nonedge_w and affinity_decay(step, num_steps)
        return {'seg_loss': (ce_sum, n_valid), 'aaf_loss': aaf}, logits

    config = TrainConfig.from_flags(FLAGS.flag_values_dict())
    metrics = train(model, loss_fn, dataset_fn, config, strategy=strategy,
                    extra_variables=[edge_w, nonedge_w],
                    variable_groups=aaf_variable_groups([edge_w, nonedge_w]),
                    run_flags=FLAGS.flag_values_dict())
"""
import dataclasses
import inspect
import logging
import math
import os
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from common.data.aaf_reader import IMG_MEAN
from common.io import check_writable_dir
from common.models.naming import original_name
from common.train import checkpoints as ckpt_lib
from common.train import summaries
from common.train.optimizers import (GroupedOptimizer, aaf_variable_groups, make_optimizer,
                                     unwrap_variable)
from common.train.regularizers import l2_loss
from common.train.schedules import poly_lr
from common.train.strategy import is_chief, worker_write_dir

LOSS_REDUCTIONS = ('global_mean', 'tower_mean')
_log = logging.getLogger(__name__)


class CheckpointWriteError(OSError):
    """Raised when writing a checkpoint fails (e.g. a full disk); the previous checkpoint stays the latest one."""


class NonFiniteLossError(FloatingPointError):
    """Raised when a loss term becomes NaN/Inf; nothing is saved after it (the last checkpoint stays good)."""

    def __init__(self, step, term, value, last_checkpoint):
        self.step, self.term, self.value, self.last_checkpoint = step, term, value, last_checkpoint
        super().__init__(f'non-finite loss at step {step}: term {term!r} = {value}; training stopped, '
                         f'last good checkpoint: {last_checkpoint or "none"}')


@dataclasses.dataclass
class TrainConfig:
    """The engine's flags. Defaults are AAF's `train*.py` defaults (bash scripts override several).

    Attributes:
      num_steps: loop length; steps 0..num_steps-1 (bash passes N+1).
      learning_rate, power: poly schedule base LR and exponent.
      momentum: optimizer momentum (TF1 momentum for AAF/SegSort).
      weight_decay: L2 coefficient (AAF: in the loss; torch optimizers: coupled).
      iter_size: optimizer updates per step, each on a new batch (Q-A6); see `accumulate_gradients`.
      accumulate_gradients: False = faithful (k updates); True = average k gradients, one update.
      save_pred_every: checkpoint when step % N == 0 and step > 0.
      save_last: also save after the last step (not in the originals; the bash scripts arrange N+1 steps instead).
      update_tb_every: summaries when step % N == 0.
      snapshot_dir: checkpoints, config and events ('' = save nothing).
      restore_from: checkpoint prefix/dir for initialisation ('' = none; the original always restored, Q-A7).
      exclude_scopes: original-name substrings not restored (`--not-restore-classifier` -> ('block5',)).
      strict_restore: `restore_from` must initialise every model variable not excluded (else a
        `checkpoints.RestoreError` lists the missing ones); False = restore what is there, log the rest.
      loss_reduction: 'global_mean' | 'tower_mean' (see module docstring, Q-A16).
      max_to_keep: checkpoints kept.
      optimizer: 'tf1_momentum' | 'torch_sgd' | 'torch_adam' when no optimizer object is passed.
      freeze_lr_after_end: PSA PolyOptimizer behaviour for steps >= num_steps.
      l2_loss: add the AAF L2 term to the loss.
      l2_name_filter: substring selecting L2 variables by original name.
      mixed_precision: dynamic loss scaling for a model built under the 'mixed_float16' policy.
      image_mean: mean added back for the input-image summary.
      colormap: colour map name for label summaries.
      progress: show a tqdm bar.
    """
    num_steps: int = 20000
    learning_rate: float = 2.5e-4
    power: float = 0.9
    momentum: float = 0.9
    weight_decay: float = 5e-4
    iter_size: int = 10
    accumulate_gradients: bool = False
    save_pred_every: int = 10000
    save_last: bool = False
    update_tb_every: int = 20
    snapshot_dir: str = ''
    restore_from: str = ''
    exclude_scopes: Tuple[str, ...] = ()
    strict_restore: bool = False
    loss_reduction: str = 'global_mean'
    max_to_keep: int = 10
    optimizer: str = 'tf1_momentum'
    freeze_lr_after_end: bool = False
    l2_loss: bool = True
    l2_name_filter: str = 'weights'
    mixed_precision: bool = False
    image_mean: Tuple[float, float, float] = IMG_MEAN
    colormap: str = 'voc'
    progress: bool = True

    def __post_init__(self):
        self.exclude_scopes = tuple(self.exclude_scopes or ())
        for name in ('num_steps', 'iter_size', 'save_pred_every', 'update_tb_every', 'max_to_keep'):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f'--{name.replace("_", "-")} must be a positive integer, got {value!r}')
        if self.loss_reduction not in LOSS_REDUCTIONS:
            raise ValueError(f'--loss-reduction must be one of {LOSS_REDUCTIONS}, got {self.loss_reduction!r}')
        if self.learning_rate < 0 or self.weight_decay < 0:
            raise ValueError('--learning-rate and --weight-decay must be >= 0')

    @classmethod
    def from_flags(cls, flags, **overrides):
        """Builds a config from a flag dict (hyphen or underscore names); unknown keys are ignored.

        `not_restore_classifier=True` adds 'block5' to exclude_scopes (the AAF/SegSort flag).
        """
        values = {k.replace('-', '_'): v for k, v in dict(flags).items()}
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in fields and v is not None}
        if values.get('not_restore_classifier'):
            kwargs['exclude_scopes'] = tuple(kwargs.get('exclude_scopes', ())) + ('block5',)
        kwargs.update(overrides)
        return cls(**kwargs)


class _DynamicLossScale:
    """Keras-style dynamic loss scaling (start 2^15, x2 after 2000 finite steps, /2 and skip on overflow)."""

    def __init__(self, initial=2.0 ** 15, growth_steps=2000):
        self.scale = tf.Variable(initial, dtype=tf.float32, trainable=False, name='loss_scale',
                                 aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name='loss_scale_good_steps',
                                      aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.growth_steps = growth_steps

    def update(self, finite):
        """Cross-replica: adjusts the scale after a step whose gradients were (not) all finite."""
        grow = tf.logical_and(finite, self.good_steps + 1 >= self.growth_steps)
        self.scale.assign(tf.where(finite, tf.where(grow, self.scale * 2.0, self.scale),
                                   tf.maximum(self.scale / 2.0, 1.0)))
        self.good_steps.assign(tf.where(tf.logical_and(finite, tf.logical_not(grow)), self.good_steps + 1,
                                        tf.zeros_like(self.good_steps)))


def _accepts_step(fn):
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return 'step' in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def _batch_size(batch):
    first = tf.nest.flatten(batch)[0]
    return tf.cast(tf.shape(first)[0], tf.float32)


def _is_ratio_list(term):
    """A term given as a list of (numerator, denominator) pairs, e.g. [(edge_sum, edge_count), ...]."""
    return (isinstance(term, list) and bool(term)
            and all(isinstance(pair, (tuple, list)) and len(pair) == 2 for pair in term))


def _image_and_label(batch):
    if isinstance(batch, dict):
        return batch.get('image'), batch.get('label')
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    return None, None


class Trainer:
    """Runs the training loop described in the module docstring.

    Args:
      model: keras.Model built inside `strategy.scope()`.
      loss_fn: callable(model, batch, training[, step]) -> terms dict or (terms, logits).
      dataset_fn: callable(tf.distribute.InputContext) -> per-replica-batched, repeated tf.data.Dataset.
      config: TrainConfig.
      strategy: the tf.distribute strategy (default: the current one).
      extra_variables: additional trainable tf.Variables (AAF edge_w/nonedge_w), created in the strategy scope.
      variable_groups: list of VariableGroup (default: `aaf_variable_groups()`, i.e. block5 x10).
      optimizer: a GroupedOptimizer (unbuilt) to use instead of `config.optimizer`; its groups are kept.
      hooks: callables hook(step, metrics_dict) run after every step (after saving).
      run_flags: dict of all CLI flags, saved to `config` / `config.json` (default: the TrainConfig).

    Loss weighting across replicas (n_r = replica batch, n = global batch): a scalar term t_r contributes
    t_r * n_r / n; the optimizer SUMs gradients over replicas. L2 contributes l2 / num_replicas per replica.
    """

    def __init__(self, model, loss_fn, dataset_fn, config, strategy=None, extra_variables=(),
                 variable_groups=None, optimizer: Optional[GroupedOptimizer] = None,
                 hooks: Sequence[Callable] = (), run_flags=None):
        self.model, self.loss_fn, self.dataset_fn, self.config = model, loss_fn, dataset_fn, config
        self.strategy = strategy or tf.distribute.get_strategy()
        self.extra_variables = list(extra_variables)
        self.hooks = list(hooks)
        self.run_flags = dict(run_flags) if run_flags is not None else dataclasses.asdict(config)
        self._loss_fn_takes_step = _accepts_step(loss_fn)

        self.trainable_variables = list(model.trainable_variables) + [
            v for v in self.extra_variables if getattr(v, 'trainable', True)]
        if not self.trainable_variables:
            raise ValueError('the model has no trainable variables')
        self.model_variables = list(model.variables)
        for v in self.model_variables + self.extra_variables:
            if not self.strategy.extended.variable_created_in_scope(unwrap_variable(v)):
                raise ValueError(f'variable {original_name(v)!r} was not created inside strategy.scope(); build the '
                                 f'model and extra variables under `with strategy.scope():`')

        if variable_groups is None:
            variable_groups = aaf_variable_groups()
        with self.strategy.scope():
            if optimizer is None:
                optimizer = make_optimizer(config.optimizer, momentum=config.momentum,
                                           weight_decay=0.0 if config.l2_loss else config.weight_decay,
                                           groups=variable_groups)
            self.optimizer = optimizer
            self.optimizer.build(self.trainable_variables)
            counter = dict(dtype=tf.int64, trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            self.step = tf.Variable(0, name='step', **counter)
            self.data_position = tf.Variable(0, name='data_position', **counter)
            self.loss_scale = _DynamicLossScale() if config.mixed_precision else None
            if config.accumulate_gradients:
                self._accumulators = [
                    tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False,
                                synchronization=tf.VariableSynchronization.ON_READ,
                                aggregation=tf.VariableAggregation.SUM, name='grad_accumulator')
                    for v in self.trainable_variables]
        counters = dict(step=self.step, data_position=self.data_position)
        if self.loss_scale is not None:
            counters.update(loss_scale=self.loss_scale.scale, loss_scale_good_steps=self.loss_scale.good_steps)
        self.checkpoint = ckpt_lib.make_checkpoint(self.model_variables + self.extra_variables, self.optimizer,
                                                   **counters)
        # Multi-worker: every worker saves (a save may run collective ops), only the chief into snapshot_dir; the
        # others write to a private temporary folder deleted after each save, and resume from the chief's files.
        self.is_chief = is_chief(self.strategy)
        self._write_dir = worker_write_dir(config.snapshot_dir, self.strategy) if config.snapshot_dir else ''
        self.manager = (ckpt_lib.make_manager(self.checkpoint, self._write_dir, config.max_to_keep)
                        if config.snapshot_dir else None)
        self._writer = None
        self._tf_vars = [unwrap_variable(v) for v in self.trainable_variables]
        self._build_step_functions()

    # ------------------------------------------------------------------------------------------------ set-up
    def learning_rate(self, step):
        """The scheduled base LR of a step (groups multiply it)."""
        c = self.config
        return poly_lr(c.learning_rate, step, c.num_steps, c.power, freeze_after_end=c.freeze_lr_after_end)

    def restore(self):
        """Resumes from `snapshot_dir` if it has a checkpoint, else initialises from `restore_from`.

        Returns:
          'resumed' | 'restored' | 'fresh'.
        """
        c = self.config
        latest = self.latest_checkpoint()
        if latest:
            # Full restore: every object of the run must be found (no expect_partial).
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            ignored = f'; --restore-from {c.restore_from} is ignored' if c.restore_from else ''
            _log.warning('resuming from %s at step %d of %d (%s already holds a checkpoint%s)', latest,
                         int(self.step.numpy()), c.num_steps, c.snapshot_dir, ignored)
            return 'resumed'
        if c.restore_from:
            restored, missing, unexpected = ckpt_lib.restore_variables(
                self.model_variables, c.restore_from, c.exclude_scopes, model=self.model)
            if not restored:
                raise ValueError(f'--restore-from {c.restore_from}: no model variable found in the checkpoint')
            if c.strict_restore:
                ckpt_lib.check_all_restored(c.restore_from, missing)
            elif missing:
                _log.warning('--restore-from %s: %d model variables not in the checkpoint keep their initial '
                             'values: %s', c.restore_from, len(missing), ', '.join(sorted(missing)[:20]))
            _log.info('restored %d variables from %s (%d missing, %d unused in the checkpoint)',
                      len(restored), c.restore_from, len(missing), len(unexpected))
            self.restore_report = (restored, missing, unexpected)
            return 'restored'
        return 'fresh'

    def completed_steps(self):
        """Steps done by the latest checkpoint in `snapshot_dir` (None without one), read without restoring."""
        latest = self.latest_checkpoint()
        return ckpt_lib.checkpoint_step(latest) if latest else None

    def _make_iterator(self):
        skip = int(self.data_position.numpy())
        self._input_pipelines = 1

        def fn(input_context):
            self._input_pipelines = input_context.num_input_pipelines
            dataset = self.dataset_fn(input_context)
            return dataset.skip(skip) if skip else dataset

        if isinstance(self.strategy, tf.distribute.OneDeviceStrategy):
            # One replica, one pipeline: iterate the dataset itself (the same batches). The distributed iterator
            # wraps it in a MultiDeviceIterator whose per-device dataset runs tf.data's autotuning thread, which
            # the `input_options` of our pipelines cannot turn off; destroying it at the end of a run waited for
            # that thread's next round, up to a minute of idle time (TF 2.21).
            device = tf.DeviceSpec.from_string(self.strategy.extended.worker_devices[0])
            with tf.device(device.replace(device_type='CPU', device_index=0).to_string()):  # its host
                return iter(fn(tf.distribute.InputContext()))
        return iter(self.strategy.distribute_datasets_from_function(fn))

    @property
    def _batches_per_pipeline(self):
        """Per-replica batches one input pipeline hands out per optimizer iteration (replicas take turns)."""
        return max(1, self.strategy.num_replicas_in_sync // max(1, self._input_pipelines))

    # ------------------------------------------------------------------------------------- per-replica work
    def _losses(self, batch, step):
        """Forward + weighted loss terms on one replica; returns (terms, total, logits)."""
        ctx = tf.distribute.get_replica_context()
        kwargs = {'step': step} if self._loss_fn_takes_step else {}
        out = self.loss_fn(self.model, batch, True, **kwargs)
        raw_terms, logits = out if isinstance(out, tuple) else (out, None)
        if not isinstance(raw_terms, dict) or not raw_terms:
            raise TypeError('loss_fn must return a non-empty dict of loss terms (optionally with logits)')
        local_n = _batch_size(batch)
        global_n = ctx.all_reduce(tf.distribute.ReduceOp.SUM, local_n)
        terms = {}
        for name, term in raw_terms.items():
            if _is_ratio_list(term):
                terms[name] = tf.add_n([self._reduce_ratio(ctx, numerator, denominator, local_n, global_n,
                                                           empty_is_zero=True)
                                        for numerator, denominator in term])
            elif isinstance(term, (tuple, list)):
                terms[name] = self._reduce_ratio(ctx, term[0], term[1], local_n, global_n)
            else:
                terms[name] = tf.cast(term, tf.float32) * (local_n / global_n)
        if self.config.l2_loss and self.config.weight_decay:
            terms['l2_loss'] = l2_loss(self.trainable_variables, self.config.weight_decay,
                                       self.config.l2_name_filter) / ctx.num_replicas_in_sync
        total = tf.add_n(list(terms.values()))
        return terms, total, logits

    def _reduce_ratio(self, ctx, numerator, denominator, local_n, global_n, empty_is_zero=False):
        """One replica's share of numerator/denominator under `config.loss_reduction` (see the module docstring).

        empty_is_zero: a ratio whose (global or tower) denominator is 0 contributes numerator * 0 -- 0, or NaN if
          the numerator is NaN -- instead of 0/0 = NaN, with finite gradients.
        """
        numerator, denominator = tf.cast(numerator, tf.float32), tf.cast(denominator, tf.float32)
        if self.config.loss_reduction == 'global_mean':
            divisor = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.stop_gradient(denominator))
            weight = 1.0
        else:
            divisor, weight = denominator, local_n / global_n
        if not empty_is_zero:
            return numerator / divisor * weight
        nonempty = divisor > 0
        safe_divisor = tf.where(nonempty, divisor, tf.ones_like(divisor))
        return tf.where(nonempty, numerator / safe_divisor * weight, numerator * 0.0)

    def _gradients(self, batch, step):
        with tf.GradientTape() as tape:
            terms, total, logits = self._losses(batch, step)
            scaled = total * self.loss_scale.scale if self.loss_scale is not None else total
        grads = tape.gradient(scaled, self._tf_vars)
        if self.loss_scale is not None:
            grads = [None if g is None else g / self.loss_scale.scale for g in grads]
        return terms, total, logits, grads

    def _apply(self, grads, lr):
        pairs = [(g, v) for g, v in zip(grads, self._tf_vars) if g is not None]
        if self.loss_scale is None:
            self.optimizer.apply_gradients(pairs, lr)
            return
        ctx = tf.distribute.get_replica_context()
        local_finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g, _ in pairs])
        overflowed = ctx.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(local_finite, tf.float32))
        all_finite = overflowed < 0.5
        # Overflow: zero gradients would still move momentum; skip the update entirely (Keras semantics).
        ctx.merge_call(self._mixed_apply, args=(pairs, lr, all_finite))

    def _mixed_apply(self, strategy, pairs, lr, finite):
        finite = strategy.experimental_local_results(finite)[0]

        def apply():
            self.optimizer.apply_gradients(pairs, lr)
            return tf.constant(True)

        tf.cond(finite, apply, lambda: tf.constant(False))
        self.loss_scale.update(finite)

    def _train_replica(self, batch, lr, step):
        terms, total, logits, grads = self._gradients(batch, step)
        self._apply(grads, lr)
        return terms, total, logits

    def _accumulate_replica(self, batch, step):
        terms, total, logits, grads = self._gradients(batch, step)
        for acc, g in zip(self._accumulators, grads):
            if g is not None:
                acc.assign_add(g)
        return terms, total, logits

    def _apply_accumulated_replica(self, lr):
        k = float(self.config.iter_size)
        grads = [tf.convert_to_tensor(acc) / k for acc in self._accumulators]
        self._apply(grads, lr)
        for acc in self._accumulators:
            acc.assign(tf.zeros_like(acc))

    def _build_step_functions(self):
        strategy = self.strategy

        def reduce_outputs(terms, total, logits, batch):
            terms = {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in terms.items()}
            total = strategy.reduce(tf.distribute.ReduceOp.SUM, total, axis=None)
            return terms, total, logits, batch

        @tf.function
        def train_step(iterator, lr, step):
            batch = next(iterator)
            terms, total, logits = strategy.run(self._train_replica, args=(batch, lr, step))
            return reduce_outputs(terms, total, logits, batch)

        @tf.function
        def accumulate_step(iterator, step):
            batch = next(iterator)
            terms, total, logits = strategy.run(self._accumulate_replica, args=(batch, step))
            return reduce_outputs(terms, total, logits, batch)

        @tf.function
        def apply_accumulated(lr):
            strategy.run(self._apply_accumulated_replica, args=(lr,))

        self._train_step, self._accumulate_step, self._apply_accumulated = (
            train_step, accumulate_step, apply_accumulated)

    # ----------------------------------------------------------------------------------------------- loop
    def _check_finite(self, step, terms, total):
        for name, value in list(terms.items()) + [('total_loss', total)]:
            if not math.isfinite(value):
                last = self.latest_checkpoint()
                raise NonFiniteLossError(step, name, value, last)

    def _summaries(self, step, lr, terms, total, logits, batch):
        if not self.config.snapshot_dir or not self.is_chief:
            return
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.config.snapshot_dir)
        scalars = dict(terms)
        scalars.update(total_loss=total, learning_rate=lr)
        summaries.write_scalars(self._writer, step, scalars)
        image, label = _image_and_label(batch)
        if logits is None or image is None or label is None:
            return
        local = self.strategy.experimental_local_results
        image, label, logits = (np.concatenate([np.asarray(t) for t in local(x)]) for x in (image, label, logits))
        rows = summaries.image_row(image, label, logits.astype(np.float32), self.config.image_mean,
                                   self.config.colormap)
        summaries.write_images(self._writer, step, 'images', rows)
        self._writer.flush()

    def latest_checkpoint(self):
        """The newest checkpoint of `snapshot_dir` (the chief's, on every worker) or None."""
        if not self.config.snapshot_dir:
            return None
        return tf.train.latest_checkpoint(self.config.snapshot_dir)

    def save(self, step):
        """Writes `model.ckpt-<step>` (no-op without snapshot_dir). Returns the path, or None on non-chief workers
        (their copy goes to a temporary folder that is deleted at once)."""
        if self.manager is None:
            return None
        try:
            path = self.manager.save(checkpoint_number=step)
        except (OSError, tf.errors.OpError) as err:
            # The `checkpoint` state file is rewritten (atomically) only after a complete write, so it still names
            # the previous checkpoint; remove what the failed write left behind.
            prefix = os.path.join(self._write_dir, f'{ckpt_lib.CHECKPOINT_NAME}-{step}')
            for leftover in tf.io.gfile.glob(prefix + '.*') + tf.io.gfile.glob(prefix + '_temp*'):
                try:
                    (tf.io.gfile.rmtree if tf.io.gfile.isdir(leftover) else tf.io.gfile.remove)(leftover)
                except (OSError, tf.errors.OpError):
                    pass
            raise CheckpointWriteError(
                f'writing checkpoint {prefix} failed ({err}); the previous checkpoint '
                f'{self.latest_checkpoint() or "(none)"} is intact and a restart resumes from it') from err
        if self.is_chief:
            return path
        tf.io.gfile.rmtree(self._write_dir)
        return None

    def train(self):
        """Restores/resumes, then runs the remaining steps.

        A `snapshot_dir` whose latest checkpoint is at or past `num_steps` is a finished run: nothing is trained
        or written (not even the config) and the result is {'step': completed steps, 'complete': True}.

        Returns:
          dict: 'step' (steps completed), 'loss' (mean total over the last step's iterations), 'lr', and the last
          value of every loss term.
        """
        c = self.config
        done = self.completed_steps()
        if done is not None and done >= c.num_steps:
            _log.warning('training is complete: %s already holds the checkpoint of step %d (--num-steps %d); '
                         'nothing to do', self.latest_checkpoint(), done - 1, c.num_steps)
            self.restore_status = 'complete'
            return {'step': done, 'complete': True}
        if c.snapshot_dir and self.is_chief:
            check_writable_dir(c.snapshot_dir, '--snapshot-dir')
            ckpt_lib.save_config(c.snapshot_dir, self.run_flags)
        if self._write_dir and not self.is_chief and tf.io.gfile.exists(self._write_dir):
            tf.io.gfile.rmtree(self._write_dir)  # left over by a worker killed while saving
        self.restore_status = self.restore()
        start = int(self.step.numpy())
        iterator = self._make_iterator()
        metrics = {'step': start}
        steps = range(start, c.num_steps)
        pbar = None
        if c.progress:
            from tqdm import tqdm
            pbar = tqdm(steps, initial=start, total=c.num_steps)
            steps = pbar
        saved_step = None
        for step in steps:
            lr = float(self.learning_rate(step))
            lr_t, step_t = tf.constant(lr, tf.float32), tf.constant(float(step), tf.float32)
            step_loss = 0.0
            for _ in range(c.iter_size):
                if c.accumulate_gradients:
                    terms, total, logits, batch = self._accumulate_step(iterator, step_t)
                else:
                    terms, total, logits, batch = self._train_step(iterator, lr_t, step_t)
                terms = {k: float(v) for k, v in terms.items()}
                total = float(total)
                self._check_finite(step, terms, total)
                step_loss += total
            if c.accumulate_gradients:
                self._apply_accumulated(lr_t)
            self.data_position.assign_add(c.iter_size * self._batches_per_pipeline)
            self.step.assign(step + 1)
            if step % c.update_tb_every == 0:
                self._summaries(step, lr, terms, total, logits, batch)
            if step % c.save_pred_every == 0 and step > 0:
                self.save(step)
                saved_step = step
            metrics = dict(terms, step=step + 1, loss=step_loss / c.iter_size, lr=lr)
            if pbar is not None:
                pbar.set_description(summaries.progress_text(metrics['loss'], lr))
            for hook in self.hooks:
                hook(step, metrics)
        if c.save_last and c.num_steps > start and saved_step != c.num_steps - 1:
            self.save(c.num_steps - 1)
        if self._writer is not None:
            self._writer.flush()
        return metrics


def train(model, loss_fn, dataset_fn, config, strategy=None, extra_variables=(), variable_groups=None,
          optimizer=None, hooks=(), run_flags=None):
    """Builds a `Trainer` and runs it; see the module docstring for the contract.

    Returns:
      the final metrics dict of `Trainer.train`.
    """
    trainer = Trainer(model, loss_fn, dataset_fn, config, strategy=strategy, extra_variables=extra_variables,
                      variable_groups=variable_groups, optimizer=optimizer, hooks=hooks, run_flags=run_flags)
    return trainer.train()
