"""`python -m a2gnn.infer_seam` (A2GNN `infer_SEAM.py`): SEAM CAMs at scales 0.5/1/1.5/2 with flips, min-max
normalised (`--out_cam` dicts, `--out_cam_pred` PNGs with background 0.26), alpha 4 / 24 CRF dicts (`--out_crf`),
and the confident "top-40%" seeds (`--crf`) with the top-100% labels (`--ori_crf`), both always written as the
original's defaults are not None. Folders are created; images whose outputs all exist are skipped."""
import os

import numpy as np
from absl import app, flags, logging

CRF_ALPHAS = (4, 24)


def define_flags(flag_values=None):
    fv = flags.FLAGS if flag_values is None else flag_values
    if 'ori_crf' in fv:
        return
    flags.DEFINE_string('weights', './netWeights/resnet38_SEAM.pth', 'SEAM weights (.pth / .npz).', flag_values=fv)
    flags.DEFINE_string('network', 'network.resnet38_SEAM', 'Only SEAM ResNet-38 exists.', flag_values=fv)
    flags.DEFINE_string('infer_list', 'voc12/train_aug.txt', 'Image list.', flag_values=fv)
    flags.DEFINE_integer('num_workers', 1, 'Unused (kept for the original command lines).', flag_values=fv)
    flags.DEFINE_string('voc12_root', '/your/path/VOCdevkit/VOC2012', 'VOC2012 directory.', flag_values=fv)
    flags.DEFINE_string('out_cam', None, 'CAM dict folder.', flag_values=fv)
    flags.DEFINE_string('out_crf', None, 'CRF dict folder prefix (<out_crf>_4.0, <out_crf>_24.0).', flag_values=fv)
    flags.DEFINE_string('out_cam_pred', None, 'CAM argmax PNG folder.', flag_values=fv)
    flags.DEFINE_string('ori_crf', './data/SEAM_Image_Full', 'Top-100% label PNG folder.', flag_values=fv)
    flags.DEFINE_string('crf', './data/SEAM_Image', 'Confident seed PNG folder.', flag_values=fv)
    flags.DEFINE_float('out_cam_pred_alpha', 0.26, 'Background score of --out_cam_pred.', flag_values=fv)
    flags.DEFINE_string('cls_labels', 'voc12/cls_labels.npy', 'Image-level labels (the original hard-codes this '
                        'path).', flag_values=fv)
    flags.DEFINE_float('width_multiplier', 1.0, 'ResNet-38 width scale (reduced networks for tests).',
                       flag_values=fv)


def _outputs(fv, name):
    paths = [os.path.join(fv.crf, name + '.png'), os.path.join(fv.ori_crf, name + '.png')]
    if fv.out_cam:
        paths.append(os.path.join(fv.out_cam, name + '.npy'))
    if fv.out_cam_pred:
        paths.append(os.path.join(fv.out_cam_pred, name + '.png'))
    if fv.out_crf:
        paths += [os.path.join(f'{fv.out_crf}_{alpha:.1f}', name + '.npy') for alpha in CRF_ALPHAS]
    return paths


def main(argv, flag_values=None, progress=True):
    """Runs over the list; returns the ids processed."""
    del argv
    from tqdm import tqdm
    from a2gnn.cli import read_image
    from a2gnn.seam import build_seam
    from a2gnn.seeds import confident_seeds, normalize_seam_cams
    from affinitynet.cam import crf_with_alpha, save_dict, to_dict
    from affinitynet.model import load_weights
    from common.data.cls_labels import load_image_label_list_from_npy
    from common.data.lists import load_img_name_list
    from common.data.psa_transforms import SEAM_MSF_SCALES, multiscale_flip_inputs
    from common.io import check_output_flags, check_writable_dir, save_png
    fv = flags.FLAGS if flag_values is None else flag_values
    names = load_img_name_list(fv.infer_list)
    check_output_flags(fv, 'out_cam', 'out_cam_pred')
    for alpha in CRF_ALPHAS if fv.out_crf else ():
        check_writable_dir(f'{fv.out_crf}_{alpha:.1f}', '--out_crf')
    labels = load_image_label_list_from_npy(names, fv.cls_labels)
    net = build_seam(fv.width_multiplier)
    if fv.weights:
        load_weights(net, fv.weights, strict=True)
    else:
        logging.warning('--weights is empty: SEAM keeps its random initialisation')
    done = []
    for name, label in tqdm(list(zip(names, labels)), desc='SEAM', disable=not progress):
        if all(os.path.exists(p) for p in _outputs(fv, name)):
            continue
        img = read_image(fv.voc12_root, name)
        cams = [net(x[None], training=False)[1] for x in multiscale_flip_inputs(img, SEAM_MSF_SCALES)]
        result = normalize_seam_cams(cams, label, img.shape[:2], fv.out_cam_pred_alpha)
        keys, values = result['cam_keys'], result['norm_cam'][..., result['cam_keys']]
        if fv.out_cam:
            save_dict(os.path.join(fv.out_cam, name + '.npy'), to_dict(keys, values))
        if fv.out_cam_pred:
            save_png(os.path.join(fv.out_cam_pred, name + '.png'), result['cam_pred'], 'L')
        if fv.out_crf:
            for alpha in CRF_ALPHAS:
                crf_keys, crf, _ = crf_with_alpha(keys, values, alpha, img)
                save_dict(os.path.join(f'{fv.out_crf}_{alpha:.1f}', name + '.npy'), to_dict(crf_keys, crf))
        seeds = confident_seeds(result['cam_np'], keys, img)
        save_png(os.path.join(fv.crf, name + '.png'), seeds['crf_label'], 'L')
        save_png(os.path.join(fv.ori_crf, name + '.png'), seeds['ori_crf_label'], 'L')
        done.append(name)
    return done


def run():
    from common.cli import run_app
    define_flags()
    run_app(main)


if __name__ == '__main__':
    run()
