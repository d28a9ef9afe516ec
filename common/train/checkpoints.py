"""Checkpoints: saving/resuming a run, partial restore for stage 1/2, the run's config.

Layout of a snapshot dir (like the originals): `model.ckpt-<step>.index/.data-*` written by
`tf.train.CheckpointManager(checkpoint_name='model.ckpt', max_to_keep=10)`, the `checkpoint` state file, `config`
(one `| key = value` line per flag, as AAF's `snapshot_arg`) and `config.json`, plus TensorBoard events.

A checkpoint holds (`make_checkpoint`):
  variables/<original name>   every model variable (BN moving statistics included) and the extra variables,
                              keyed by `common.models.naming.original_name` -- so restores work by NAME, like a
                              TF1 Saver, independently of Keras object paths;
  optimizer/...               slots (keyed by original name) and the optimizer's step counter;
  step                        number of completed steps (= the loop index of the next step);
  data_position               number of batches each input pipeline has handed out (deterministic skip on resume).

Atomicity: `Checkpoint.save` writes the shards under a temporary prefix and merges/renames them into place; only then
is the `checkpoint` state file rewritten (itself with an atomic write-and-rename). A process killed while saving
leaves the previous checkpoint and a state file that points to it; the engine never saves after a non-finite loss.

Partial restore (`restore_variables`): AAF/SegSort stage 1 starts from the ImageNet Slim checkpoint (TF1 names;
delegated to `common.weights.slim.load_slim_checkpoint`), stage 2 from a stage-1 checkpoint of this project. In
both cases only the MODEL variables are restored, minus those whose original name contains an exclude scope
(`--not-restore-classifier` = ('block5',)); optimizer slots, the step and the extra (AAF adversarial) variables start
fresh -- faithful to the originals' `restore_var` list (aaf_segsort.md Q-A9). `expect_partial` semantics: keys of
the checkpoint that no variable asks for are reported, not an error.
"""
import json
import os

import tensorflow as tf

from common.io import atomic_write_text

from common.models.naming import original_names
from common.train.optimizers import unwrap_variable
from common.weights.slim import load_slim_checkpoint, resolve_checkpoint_path

CHECKPOINT_NAME = 'model.ckpt'
_VALUE_SUFFIX = '/.ATTRIBUTES/VARIABLE_VALUE'


def escape_key(name):
    """How tf.train.Checkpoint escapes a dict key inside a checkpoint key ('.' -> '..', '/' -> '.S')."""
    return name.replace('.', '..').replace('/', '.S')


def variable_key(name):
    """The checkpoint key of the variable whose original name is `name`."""
    return 'variables/' + escape_key(name) + _VALUE_SUFFIX


def named_variables(variables):
    """{original name: tf.Variable} for checkpointing; raises on duplicate names."""
    return {name: unwrap_variable(v) for name, v in original_names(variables).items()}


def make_checkpoint(variables, optimizer=None, **counters):
    """A tf.train.Checkpoint over named variables, the optimizer and scalar counter variables.

    Args:
      variables: model variables (all of them, not only trainable) + extra variables.
      optimizer: a `GroupedOptimizer` (built) or None.
      **counters: tf.Variables such as step=..., data_position=....
    """
    kwargs = dict(counters)
    if optimizer is not None:
        kwargs['optimizer'] = optimizer
    return tf.train.Checkpoint(variables=named_variables(variables), **kwargs)


def make_manager(checkpoint, snapshot_dir, max_to_keep=10):
    """`tf.train.CheckpointManager` writing `<snapshot_dir>/model.ckpt-<step>`."""
    return tf.train.CheckpointManager(checkpoint, snapshot_dir, max_to_keep=max_to_keep,
                                      checkpoint_name=CHECKPOINT_NAME)


def resolve_checkpoint(path, flag='--restore-from'):
    """A checkpoint prefix from a prefix or a directory (its latest checkpoint); clear errors otherwise."""
    if not path:
        raise ValueError(f'{flag} is empty')
    try:
        return resolve_checkpoint_path(path)
    except FileNotFoundError as err:
        raise FileNotFoundError(f'{flag}: {err}') from None


def is_object_checkpoint(path):
    """True for checkpoints written by `make_checkpoint` (TF2 object graph with `variables/...` keys)."""
    keys = [k for k, _ in tf.train.list_variables(path)]
    return '_CHECKPOINTABLE_OBJECT_GRAPH' in keys and any(k.startswith('variables/') for k in keys)


def excluded(name, exclude_scopes):
    """True if the original name contains any exclude scope (the originals test `'block5' not in v.name`)."""
    return any(scope and scope in name for scope in exclude_scopes)


class RestoreError(ValueError):
    """A `--restore-from` checkpoint that does not fit the model; the message lists every offending variable."""


def _listing(lines, limit=40):
    shown = ''.join(f'\n  {line}' for line in lines[:limit])
    return shown + (f'\n  ... and {len(lines) - limit} more' if len(lines) > limit else '')


def check_shapes(path, model_shapes, checkpoint_shapes, flag='--restore-from'):
    """Raises `RestoreError` listing EVERY variable whose checkpoint shape differs from the model's.

    Args:
      path: the checkpoint (for the message).
      model_shapes: {name: shape} of the variables to restore.
      checkpoint_shapes: {name: shape} of the same names in the checkpoint (names absent there are skipped).
    """
    mismatched = [f'variable {name!r} has shape {list(checkpoint_shapes[name])} in the checkpoint but '
                  f'{list(shape)} in the model' for name, shape in model_shapes.items()
                  if name in checkpoint_shapes and list(checkpoint_shapes[name]) != list(shape)]
    if mismatched:
        raise RestoreError(f'{flag} {path}: the checkpoint is of another architecture; {len(mismatched)} '
                           f'variable(s) differ in shape:' + _listing(mismatched))


def check_all_restored(path, missing, flag='--restore-from', allow_flag='--allow-partial-restore'):
    """Raises `RestoreError` listing the model variables a restore left at their initial values.

    Args:
      path: the checkpoint (for the message).
      missing: original names of model variables absent from the checkpoint (and not excluded).
    """
    if missing:
        raise RestoreError(f'{flag} {path}: {len(missing)} model variable(s) are not in the checkpoint and would '
                           f'stay uninitialised (exclude them with --not-restore-classifier if they are the '
                           f'classifier, or pass {allow_flag} to start them from their initialisers on purpose):'
                           + _listing(sorted(missing)))


def checkpoint_step(path):
    """The `step` counter (completed steps) stored in an engine checkpoint, or None if it has none."""
    reader = tf.train.load_checkpoint(path)
    key = 'step' + _VALUE_SUFFIX
    return int(reader.get_tensor(key)) if reader.has_tensor(key) else None


def restore_variables(variables, ckpt_path, exclude_scopes=(), model=None):
    """Restores variables by original name from a checkpoint (stage 1 / stage 2 initialisation).

    Args:
      variables: the variables to restore (the engine passes all MODEL variables, not extras or optimizer slots).
      ckpt_path: a checkpoint prefix or a directory. Checkpoints of this project are read by name; TF1/Slim
        checkpoints are handed to `common.weights.slim.load_slim_checkpoint(model, path, exclude_scopes)`.
      exclude_scopes: substrings; variables whose original name contains one are not restored.
      model: the Keras model (needed for Slim checkpoints).
    Returns:
      (restored, missing, unexpected): lists of original names restored, names absent from the checkpoint, and
      checkpoint variable names nobody asked for (`expect_partial`).
    Raises:
      RestoreError (a ValueError): shapes differ (another architecture); lists every such variable, nothing is
        assigned.
    """
    path = resolve_checkpoint(ckpt_path)
    wanted = {name: var for name, var in named_variables(variables).items() if not excluded(name, exclude_scopes)}
    if not is_object_checkpoint(path):
        if model is None:
            raise ValueError(f'--restore-from: {path} is a TF1/Slim checkpoint; pass the model to restore it')
        check_shapes(path, {name: var.shape for name, var in wanted.items()},
                     tf.train.load_checkpoint(path).get_variable_to_shape_map())
        return load_slim_checkpoint(model, path, exclude_scopes=tuple(exclude_scopes))
    reader = tf.train.load_checkpoint(path)
    shapes = reader.get_variable_to_shape_map()
    check_shapes(path, {name: var.shape for name, var in wanted.items()},
                 {name: shapes[variable_key(name)] for name in wanted if variable_key(name) in shapes})
    restored, missing, asked = [], [], set()
    for name, var in wanted.items():
        key = variable_key(name)
        asked.add(key)
        if key not in shapes:
            missing.append(name)
            continue
        var.assign(reader.get_tensor(key))
        restored.append(name)
    unexpected = [k[len('variables/'):-len(_VALUE_SUFFIX)] for k in shapes
                  if k.startswith('variables/') and k.endswith(_VALUE_SUFFIX) and k not in asked]
    return restored, missing, unexpected


def save_config(snapshot_dir, config):
    """Writes the run's flags beside the checkpoints: `config` (AAF `snapshot_arg` format) and `config.json`.

    Args:
      snapshot_dir: directory (created if needed).
      config: dict of flag name -> value (values that JSON cannot encode are stored as strings).
    """
    os.makedirs(snapshot_dir, exist_ok=True)
    lines = ''.join(f'| {key} = {value}\n' for key, value in config.items())
    atomic_write_text(os.path.join(snapshot_dir, 'config'), lines)
    atomic_write_text(os.path.join(snapshot_dir, 'config.json'),
                       json.dumps(config, indent=2, sort_keys=True, default=str) + '\n')
