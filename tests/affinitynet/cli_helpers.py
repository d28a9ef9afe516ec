"""Helpers of the AffinityNet CLI tests: run a CLI's main in-process on fresh flags, tiny weights files."""
import numpy as np
from absl import flags

WIDTH = 1 / 16


def run_main(module, **values):
    """Runs module.main on a fresh FlagValues parsed from `values` (None values are left out)."""
    fv = flags.FlagValues()
    module.define_flags(fv)
    argv = ['prog'] + [f'--{k}={v}' for k, v in values.items() if v is not None]
    fv(argv)
    return module.main([], fv)


def write_list(path, names):
    path.write_text(''.join(f'/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png\n' for n in names))
    return str(path)


def tiny_weights(path, kind, seed=0):
    """Writes random weights of a reduced ResNet-38 cls / aff net as .npz; returns the path."""
    import keras
    from affinitynet import model as M
    keras.utils.set_random_seed(seed)
    net = M.build_classifier('resnet38', WIDTH) if kind == 'cls' else M.build_affinity_net('resnet38', WIDTH)
    M.save_weights(net, str(path))
    return str(path)


# A per-image CLI run in a subprocess that SIGKILLs itself in the middle of its n-th file write under `out_dir`:
# after the temporary file is complete, before it is renamed into place (common.io.atomic_write), so the kill lands
# at the same point on a busy or an idle machine and leaves a partial temporary file, as a real kill would.
_KILL_AT_NTH_WRITE = '''
import importlib, os, signal, sys
module, out_dir, n = sys.argv[1], os.path.abspath(sys.argv[2]), int(sys.argv[3])
real_replace, writes = os.replace, []
def replace_or_die(src, dst, *args, **kwargs):
    if os.path.abspath(dst).startswith(out_dir + os.sep):
        writes.append(dst)
        if len(writes) == n:
            os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *args, **kwargs)
os.replace = replace_or_die
sys.argv = [module] + sys.argv[4:]
importlib.import_module(module).run()
'''


def run_killed_at_nth_write(module, out_dir, n, **values):
    """Runs `python -m module` with flags `values`, killed (SIGKILL) during its n-th write under out_dir.

    Returns:
      the subprocess' return code (-SIGKILL when the kill happened).
    """
    import os
    import subprocess
    import sys
    args = [f'--{k}={v}' for k, v in values.items() if v is not None]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), TF_CPP_MIN_LOG_LEVEL='2')
    proc = subprocess.run([sys.executable, '-c', _KILL_AT_NTH_WRITE, module, str(out_dir), str(n)] + args,
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    return proc.returncode


def temp_files(folder):
    """Temporary files of common.io.atomic_write under `folder` (recursively)."""
    import os
    return [os.path.join(d, f) for d, _, files in os.walk(folder) for f in files if f.startswith('.tmp_')]
