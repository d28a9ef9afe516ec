"""Pieces shared by the AffinityNet command-line programs: flags the originals lack, image ids and images of a
list, per-image skipping of finished outputs, and progress bars."""
import os

import numpy as np
from absl import flags

from common.data.lists import load_img_name_list


def define_model_flags(flag_values, network_default):
    """--network (the original's module name or 'resnet38' / 'vgg16') and --width_multiplier (ours)."""
    flags.DEFINE_string('network', network_default, 'network.resnet38_* or network.vgg16_* (or resnet38 / vgg16).',
                        flag_values=flag_values)
    flags.DEFINE_float('width_multiplier', 1.0, 'Backbone channel scale (1.0 = the original; smaller for tests, '
                       'the synthetic pipeline and the quick start).', flag_values=flag_values)


def image_ids(list_path, flag='--infer_list'):
    """Ids of a PSA list file; errors name the flag."""
    try:
        return load_img_name_list(list_path)
    except (FileNotFoundError, ValueError) as error:
        raise ValueError(f'{flag}: {error}') from error


def image_path(voc12_root, name):
    return os.path.join(voc12_root, 'JPEGImages', name + '.jpg')


def read_image(voc12_root, name):
    """uint8 [H, W, 3] RGB image of an id; a missing, unreadable or truncated file is named."""
    from common.data.psa_transforms import read_rgb
    return np.array(read_rgb(image_path(voc12_root, name)))  # writable: pydensecrf rejects read-only buffers


def pending(names, outputs):
    """Ids whose outputs are not all written yet (an interrupted per-image stage resumes where it stopped).
    Temporary files a killed run left in the output folders are removed first.

    Args:
      names: ids; outputs: list of (folder or None, suffix) pairs.
    """
    from common.io import remove_stale_temp_files
    folders = [(d, s) for d, s in outputs if d]
    for folder in {str(d) for d, _ in folders}:
        removed = remove_stale_temp_files(folder)
        if removed:
            print(f'{folder}: removed {removed} partial file(s) of an interrupted run')
    return [n for n in names if not all(os.path.isfile(os.path.join(d, n + s)) for d, s in folders)]


def progress(iterable, total=None, desc=None):
    from tqdm import tqdm
    return tqdm(iterable, total=total, desc=desc, dynamic_ncols=True, mininterval=2.0)
