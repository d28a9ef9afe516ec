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
