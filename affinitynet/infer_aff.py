"""Random-walk pseudo labels from AffinityNet and the CAMs (PSA `infer_aff.py`).

    python -m affinitynet.infer_aff --weights res38_aff.pth --network network.resnet38_aff \\
        --infer_list voc12/train_aug.txt --cam_dir cam --voc12_root VOC2012 --out_rw rw

Per image: affinities of the image padded to multiples of 8, background (1 - max CAM)^alpha, the walk
T^(2^logt) with T = A^beta / colsum (`affinitynet.random_walk`), bilinear upsampling, argmax -> uint8 PNG (0..20).
`--rw_impl sparse` (default) propagates the CAMs through the sparse radius-5 transition matrix without forming
the dense one; `--rw_impl dense` is the original's matrix squaring. Finished images are skipped; files are written
atomically.
"""
import os

import numpy as np
import tensorflow as tf
from absl import app, flags

from affinitynet import cam as cam_lib
from affinitynet import model as model_lib
from affinitynet import random_walk as rw_lib
from affinitynet import runtime
from common.data import psa_transforms
from common.io import check_output_flags, save_png

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    flags.DEFINE_string('weights', None, 'AffinityNet weights (.pth of the original, or .npz of train_aff).',
                        flag_values=flag_values)
    runtime.define_model_flags(flag_values, 'network.vgg16_aff')
    flags.DEFINE_string('infer_list', 'voc12/train_aug.txt', 'PSA list of the images.', flag_values=flag_values)
    flags.DEFINE_integer('num_workers', 8, 'Kept for compatibility.', flag_values=flag_values)
    flags.DEFINE_string('cam_dir', None, 'CAM dicts of infer_cls --out_cam.', flag_values=flag_values)
    flags.DEFINE_string('voc12_root', None, 'VOC2012 directory.', flag_values=flag_values)
    flags.DEFINE_integer('alpha', 16, 'Background power.', flag_values=flag_values)
    flags.DEFINE_string('out_rw', None, 'Output folder of label PNGs.', flag_values=flag_values)
    flags.DEFINE_integer('beta', 8, 'Affinity power.', flag_values=flag_values)
    flags.DEFINE_integer('logt', 8, 'The walk has 2^logt steps.', flag_values=flag_values)
    flags.DEFINE_enum('rw_impl', 'sparse', rw_lib.IMPLEMENTATIONS, 'sparse: stencil walk on the sparse matrix '
                      '(same labels, faster, less memory); dense: the original matrix squaring.',
                      flag_values=flag_values)


def walk_image(net, arch, img, cam_dict, alpha, beta, logt, impl, cam_path='CAM'):
    """Random-walk result dict of one uint8 image and its CAM dict (see `random_walk.random_walk`)."""
    keys, values = cam_lib.from_dict(cam_dict)
    if values is None:
        values = np.zeros(img.shape[:2] + (0,), np.float32)
    if values.shape[:2] != img.shape[:2]:
        raise ValueError(f'{cam_path}: CAM size {values.shape[:2]} differs from its image size {img.shape[:2]}')
    x = psa_transforms.pad_to_multiple(psa_transforms.normalize(img, arch), 8, 0.0)
    aff = net(tf.convert_to_tensor(x[np.newaxis]), to_dense=impl == 'dense')
    return rw_lib.random_walk(aff, keys, values, alpha, beta, logt, impl=impl, radius=net.radius)


def main(argv, flag_values=FLAGS):
    del argv
    f = flag_values
    for required in ('weights', 'voc12_root', 'cam_dir', 'out_rw'):
        if not f[required].value:
            raise app.UsageError(f'--{required}: required')
    arch = model_lib.arch_of(f.network)
    names = runtime.image_ids(f.infer_list)
    check_output_flags(f, 'out_rw')
    todo = runtime.pending(names, [(f.out_rw, '.png')])
    print(f'infer_aff: {len(names) - len(todo)} of {len(names)} images already done')
    if not todo:
        return
    net = model_lib.build_affinity_net(arch, f.width_multiplier)
    model_lib.load_weights(net, f.weights, strict=True)
    for name in runtime.progress(todo, desc='infer_aff'):
        cam_path = os.path.join(f.cam_dir, name + '.npy')
        cam_dict = cam_lib.load_dict(cam_path, 'CAM')
        result = walk_image(net, arch, runtime.read_image(f.voc12_root, name), cam_dict, f.alpha, f.beta, f.logt,
                            f.rw_impl, cam_path)
        save_png(os.path.join(f.out_rw, name + '.png'), result['label'])


def run():
    from common.cli import run_app
    define_flags()
    run_app(main)


if __name__ == '__main__':
    run()
