"""CAMs, la/ha CRF dictionaries and CAM predictions of a trained classifier (PSA `infer_cls.py`).

    python -m affinitynet.infer_cls --weights res38_cls.pth --network network.resnet38_cls \\
        --infer_list voc12/train_aug.txt --voc12_root VOC2012 --out_cam cam --out_la_crf crf_la --out_ha_crf crf_ha

Per image: 4 scales (1, 0.5, 1.5, 2) x flip -> forward_cam -> fusion (`affinitynet.cam.fuse_cams`); `--out_cam`
writes the {class: norm CAM} dict (.npy), `--out_la_crf` / `--out_ha_crf` the dense-CRF dicts with background
power `--low_alpha` / `--high_alpha`, `--out_cam_pred` the uint8 PNG argmax with a constant 0.2 background.
Images whose requested outputs all exist are skipped (an interrupted run resumes); every file is written
atomically. Output folders are created (the original required them to exist).
"""
import os

import numpy as np
import tensorflow as tf
from absl import app, flags

from affinitynet import cam as cam_lib
from affinitynet import model as model_lib
from affinitynet import runtime
from common.data import psa_transforms
from common.data.cls_labels import load_cls_labels
from common.io import check_output_flags, save_png

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    flags.DEFINE_string('weights', None, 'Classifier weights (.pth of the original, or .npz of train_cls).',
                        flag_values=flag_values)
    runtime.define_model_flags(flag_values, 'network.vgg16_cls')
    flags.DEFINE_string('infer_list', 'voc12/val.txt', 'PSA list of the images.', flag_values=flag_values)
    flags.DEFINE_integer('num_workers', 8, 'Kept for compatibility (inference runs in-process).',
                         flag_values=flag_values)
    flags.DEFINE_string('voc12_root', None, 'VOC2012 directory.', flag_values=flag_values)
    flags.DEFINE_integer('low_alpha', 4, 'Background power of the la CRF.', flag_values=flag_values)
    flags.DEFINE_integer('high_alpha', 32, 'Background power of the ha CRF.', flag_values=flag_values)
    flags.DEFINE_string('out_cam', None, 'Folder of CAM dicts (.npy).', flag_values=flag_values)
    flags.DEFINE_string('out_la_crf', None, 'Folder of la CRF dicts (.npy).', flag_values=flag_values)
    flags.DEFINE_string('out_ha_crf', None, 'Folder of ha CRF dicts (.npy).', flag_values=flag_values)
    flags.DEFINE_string('out_cam_pred', None, 'Folder of CAM argmax PNGs (bg 0.2).', flag_values=flag_values)
    flags.DEFINE_string('cls_labels', 'voc12/cls_labels.npy', 'Image-level labels (the original hard-codes '
                        'voc12/cls_labels.npy).', flag_values=flag_values)


def compiled_forward_cam(net):
    """`net.forward_cam` as one traced function for every input size (`reduce_retracing`): run eagerly, op by op,
    the 8 calls per image of a small network cost mostly Python dispatch (84% of infer_cls on the quick start's
    reduced ResNet-38)."""
    return tf.function(net.forward_cam, reduce_retracing=True)


def image_cams(net, img, arch, forward_cam=None):
    """forward_cam of the 8 multi-scale / flip inputs of one uint8 image: list of [1, h, w, 20].

    forward_cam: the function to run (default `net.forward_cam`, eager), e.g. `compiled_forward_cam(net)`.
    """
    forward_cam = forward_cam or net.forward_cam
    inputs = psa_transforms.multiscale_flip_inputs(img, psa_transforms.PSA_MSF_SCALES, arch)
    return [forward_cam(tf.convert_to_tensor(x[np.newaxis])) for x in inputs]


def infer_image(net, arch, img, label, outputs, name, low_alpha=4, high_alpha=32, forward_cam=None):
    """Writes the requested outputs of one image. outputs: dict kind -> folder (cam, la_crf, ha_crf, cam_pred);
    forward_cam: see `image_cams`."""
    fused = cam_lib.fuse_cams(image_cams(net, img, arch, forward_cam), label, img.shape[:2])
    keys, values = fused['cam_keys'], fused['cam_values']
    if outputs.get('cam'):
        cam_lib.save_dict(os.path.join(outputs['cam'], name + '.npy'), cam_lib.to_dict(keys, values))
    if outputs.get('cam_pred'):
        save_png(os.path.join(outputs['cam_pred'], name + '.png'), fused['cam_pred'])
    for kind, alpha in (('la_crf', low_alpha), ('ha_crf', high_alpha)):
        if outputs.get(kind):
            crf_keys, crf, _ = cam_lib.crf_with_alpha(keys, values, alpha, img)
            cam_lib.save_dict(os.path.join(outputs[kind], name + '.npy'), cam_lib.to_dict(crf_keys, crf))


def main(argv, flag_values=FLAGS):
    del argv
    f = flag_values
    for required in ('weights', 'voc12_root'):
        if not f[required].value:
            raise app.UsageError(f'--{required}: required')
    outputs = {'cam': f.out_cam, 'la_crf': f.out_la_crf, 'ha_crf': f.out_ha_crf, 'cam_pred': f.out_cam_pred}
    if not any(outputs.values()):
        raise app.UsageError('give at least one of --out_cam, --out_la_crf, --out_ha_crf, --out_cam_pred')
    arch = model_lib.arch_of(f.network)
    names = runtime.image_ids(f.infer_list)
    check_output_flags(f, 'out_cam', 'out_la_crf', 'out_ha_crf', 'out_cam_pred')
    labels = load_cls_labels(f.cls_labels)
    missing = [n for n in names if n not in labels]
    if missing:
        raise KeyError(f'--cls_labels {f.cls_labels} has no label for {len(missing)} ids of {f.infer_list}, e.g. '
                       f'{missing[:3]} (test images have no class labels)')
    suffix = {'cam': '.npy', 'la_crf': '.npy', 'ha_crf': '.npy', 'cam_pred': '.png'}
    todo = runtime.pending(names, [(d, suffix[k]) for k, d in outputs.items()])
    print(f'infer_cls: {len(names) - len(todo)} of {len(names)} images already done')
    if not todo:
        return
    net = model_lib.build_classifier(arch, f.width_multiplier)
    model_lib.load_weights(net, f.weights, strict=True)
    forward_cam = compiled_forward_cam(net)
    for name in runtime.progress(todo, desc='infer_cls'):
        infer_image(net, arch, runtime.read_image(f.voc12_root, name), labels[name], outputs, name,
                    f.low_alpha, f.high_alpha, forward_cam)


def run():
    from common.cli import run_app
    define_flags()
    run_app(main)


if __name__ == '__main__':
    run()
