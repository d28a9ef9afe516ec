"""Atomic file output: everything the project writes goes to a temporary file in the destination folder first and
is renamed into place, so an interrupted run never leaves a truncated image, list or config behind.
"""
import io
import os
import tempfile

import numpy as np

TEMP_PREFIX = '.tmp_'


def atomic_write(path, write_fn, binary=True):
    """Writes `path` atomically.

    Args:
      path: destination file (its folder is created).
      write_fn: callable(file_object) writing the contents.
      binary: open the temporary file in binary (default) or text mode.
    Returns:
      path.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=TEMP_PREFIX + os.path.basename(path) + '.')
    try:
        with os.fdopen(fd, 'wb' if binary else 'w') as handle:
            write_fn(handle)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600 files; outputs are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def remove_stale_temp_files(directory):
    """Deletes the temporary files `atomic_write` leaves in `directory` when its process is killed mid-write
    (SIGKILL skips the clean-up), so a resumed per-image stage leaves no partial file behind. Call it once, before
    the stage writes anything; only one process may write to `directory` at a time.

    Returns:
      the number of files removed (0 when the folder does not exist).
    """
    if not directory or not os.path.isdir(directory):
        return 0
    stale = [e for e in os.listdir(directory) if e.startswith(TEMP_PREFIX)]
    for entry in stale:
        try:
            os.remove(os.path.join(directory, entry))
        except FileNotFoundError:
            pass
    return len(stale)


def check_writable_dir(path, flag):
    """Creates the output folder `path` if needed and checks that a file can be written in it.

    Called before long work starts, so that a read-only, full or mistyped output location fails at once with a
    message naming the flag and the folder (not hours later, deep inside TensorFlow). Remote paths (`gs://...`)
    are left to TensorFlow's file system layer.

    Args:
      path: the folder.
      flag: the flag that gave it, e.g. '--snapshot-dir' (used in the message).
    Returns:
      path.
    Raises:
      OSError (its subclass as raised by the OS, e.g. PermissionError) naming `flag` and `path`.
    """
    if not path or '://' in str(path):
        return path
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix='.write_test_')
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise type(err)(err.errno, f'{flag} {path}: cannot write to the output folder '
                                   f'({err.strerror or err})') from err
    return path


def check_output_flags(flag_values, *names, parent_of=()):
    """`check_writable_dir` for every output flag of a CLI that is set, before any work starts.

    Args:
      flag_values: parsed flags (absl FlagValues or any object with the attributes).
      names: flags that name output folders, e.g. 'save_dir', 'out_cam'.
      parent_of: flags that name output files (or file prefixes): their folder is checked.
    Raises:
      OSError naming the flag and the folder.
    """
    for name in names + tuple(parent_of):
        value = getattr(flag_values, name, None)
        if not value:
            continue
        folder = os.path.dirname(os.path.abspath(str(value))) if name in parent_of else str(value)
        check_writable_dir(folder, '--' + name)


def atomic_write_bytes(path, data):
    """Writes bytes to `path` atomically."""
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path, text):
    """Writes a string to `path` atomically."""
    return atomic_write(path, lambda handle: handle.write(text), binary=False)


def png_bytes(array, mode='L', palette=None):
    """PNG encoding of an array.

    Args:
      array: uint8 [H, W] (modes 'L' / 'P'), uint8 [H, W, 3] ('RGB') or uint16 [H, W] ('I;16').
      mode: 'L' (raw 8-bit values), 'P' (raw indices + `palette`), 'RGB' or 'I;16'.
      palette: [256, 3] uint8 colour table for mode 'P'.
    Returns:
      bytes.
    """
    from PIL import Image
    if mode == 'I;16':
        image = Image.fromarray(np.ascontiguousarray(array, np.uint16))
    else:
        image = Image.fromarray(np.ascontiguousarray(array, np.uint8))  # [H, W] -> 'L', [H, W, 3] -> 'RGB'
        if image.mode != ('RGB' if mode == 'RGB' else 'L'):
            raise ValueError(f'save_png: array of shape {np.shape(array)} cannot be written as mode {mode!r}')
        if mode == 'P':
            image.putpalette(np.asarray(palette, np.uint8).reshape(-1).tolist())  # an 'L' image becomes 'P'
    buffer = io.BytesIO()
    image.save(buffer, format='PNG')
    return buffer.getvalue()


def save_png(path, array, mode='L', palette=None):
    """Writes a PNG atomically (arguments as `png_bytes`); returns path."""
    return atomic_write_bytes(path, png_bytes(array, mode, palette))
