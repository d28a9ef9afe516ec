"""Restores TF1 / TF-Slim checkpoints into Keras models by original variable name.

Every variable of our builders has its TF1 name recorded (`common.models.naming.original_name`), e.g.
`resnet_v1_101/block1/unit_1/bottleneck_v1/conv1/weights`, so the Slim ImageNet checkpoint `resnet_v1_101.ckpt`
and checkpoints saved by the AAF/SegSort originals (`model.ckpt-<step>`) restore directly.
"""
import os

import numpy as np
import tensorflow as tf

from common.models.naming import original_names


def resolve_checkpoint_path(ckpt_path):
    """Returns the checkpoint prefix for a prefix or a directory holding a `checkpoint` state file.

    Raises FileNotFoundError naming the path when nothing readable is there.
    """
    path = os.fspath(ckpt_path)
    if tf.io.gfile.isdir(path):  # gfile: also gs:// and other remote file systems
        prefix = tf.train.latest_checkpoint(path)
        if prefix is None:
            raise FileNotFoundError(
                f'checkpoint directory {path!r} contains no checkpoint (no `checkpoint` state file naming one); '
                f'pass the checkpoint prefix instead (e.g. {os.path.join(path, "model.ckpt")!r})')
        return prefix
    if tf.io.gfile.exists(path + '.index') or tf.io.gfile.exists(path):
        return path
    raise FileNotFoundError(f'no TF checkpoint at {path!r} (expected {path}.index or a directory with a '
                            f'`checkpoint` state file)')


def _excluded(name, exclude_scopes):
    return any(scope in name for scope in exclude_scopes)


def load_slim_checkpoint(model, ckpt_path, exclude_scopes=()):
    """Assigns checkpoint tensors to the model's variables with the same original name.

    Args:
      model: keras.Model (or Layer) whose variables have original names (`common.models.naming`).
      ckpt_path: checkpoint prefix (`.../model.ckpt`, `.../resnet_v1_101.ckpt`) or a directory with a
        `checkpoint` state file.
      exclude_scopes: names containing any of these substrings are neither restored nor reported
        (e.g. ('block5',) = the originals' --not-restore-classifier).
    Returns:
      (restored, missing, unexpected): sorted lists of original names: model variables restored; model
      variables absent from the checkpoint; checkpoint tensors matching no model variable (not excluded).
    Raises:
      FileNotFoundError: no checkpoint at ckpt_path.
      ValueError: a shape mismatch (names the variable, both shapes and the checkpoint).
    """
    exclude_scopes = tuple(exclude_scopes or ())
    prefix = resolve_checkpoint_path(ckpt_path)
    reader = tf.train.load_checkpoint(prefix)
    ckpt_shapes = reader.get_variable_to_shape_map()
    by_name = original_names(model.variables)
    restored, missing = [], []
    for name, variable in by_name.items():
        if _excluded(name, exclude_scopes):
            continue
        if name not in ckpt_shapes:
            missing.append(name)
            continue
        ckpt_shape = tuple(ckpt_shapes[name])
        var_shape = tuple(variable.shape)
        if ckpt_shape != var_shape:
            raise ValueError(f'shape mismatch for variable {name!r}: model {var_shape}, checkpoint {ckpt_shape} '
                             f'in {prefix!r}')
        value = reader.get_tensor(name)
        variable.assign(np.asarray(value, dtype=np.dtype(variable.dtype)))
        restored.append(name)
    unexpected = [name for name in ckpt_shapes if name not in by_name and not _excluded(name, exclude_scopes)]
    return sorted(restored), sorted(missing), sorted(unexpected)
