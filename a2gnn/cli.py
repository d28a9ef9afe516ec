"""Shared body of `python -m a2gnn.train_infer_box` and `python -m a2gnn.train_infer_others`
(train_infer_A2GNN_box.py / train_infer_A2GNN_others.py): for every image of the list, build the gated affinity
graph, train a fresh A2GNN on the seed, write the CRF-refined pseudo label PNG. Images whose PNG exists are
skipped, so an interrupted run resumes; PNGs are written atomically."""
import os

from absl import app, flags, logging

from common.io import check_output_flags

BOX_DEFAULTS = dict(weights='./netWeights/final_model/aff_box.pth', seed_label_root='./data/Init_Label/SEAM_Box',
                    epochs=150, radius=4, lr=0.035, save_path='./out/box_pred')
OTHERS_DEFAULTS = dict(weights='./netWeights/final_model/aff_scribble.pth',
                       seed_label_root='./data/Init_Label/Scribble_SuperPixel', epochs=50, radius=3, lr=0.03,
                       save_path='./out/scribble_pred')


def str2bool(value):
    """A real boolean flag value: the original's `type=bool` made `--rw False` true."""
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in ('1', 'true', 't', 'yes', 'y'):
        return True
    if lowered in ('0', 'false', 'f', 'no', 'n', ''):
        return False
    raise ValueError(f'not a boolean: {value!r}')


def define_flags(mode, flag_values=None):
    """Defines the flags of one script (the originals' names and defaults, plus a few of ours)."""
    fv = flags.FLAGS if flag_values is None else flag_values
    if 'seed_label_root' in fv:
        return
    d = BOX_DEFAULTS if mode == 'box' else OTHERS_DEFAULTS
    flags.DEFINE_string('weights', d['weights'], 'Gated affinity net weights (.pth/.npz; "" = random init).',
                        flag_values=fv)
    flags.DEFINE_string('network', 'network.resnet38_aff_gated', 'Only the gated ResNet-38 exists.', flag_values=fv)
    flags.DEFINE_string('infer_list', 'voc12/train_aug.txt', 'Image list.', flag_values=fv)
    flags.DEFINE_integer('num_workers', 8, 'Unused (kept for the original command lines).', flag_values=fv)
    flags.DEFINE_string('voc12_root', '/your/path/VOCdevkit/VOC2012', 'VOC2012 directory.', flag_values=fv)
    flags.DEFINE_string('seed_label_root', d['seed_label_root'], 'Seed PNG folder.', flag_values=fv)
    flags.DEFINE_integer('epochs', d['epochs'], 'GNN steps per phase (two phases).', flag_values=fv)
    flags.DEFINE_integer('radius', d['radius'], 'Affinity window radius.', flag_values=fv)
    flags.DEFINE_integer('hidden', 256, 'GNN hidden units.', flag_values=fv)
    flags.DEFINE_integer('num_class', 21, 'Classes.', flag_values=fv)
    flags.DEFINE_float('dropout', 0.5, 'GNN dropout.', flag_values=fv)
    flags.DEFINE_float('lr', d['lr'], 'Adam learning rate.', flag_values=fv)
    flags.DEFINE_float('weight_decay', 5e-4, 'Adam L2 (coupled).', flag_values=fv)
    flags.DEFINE_string('save_path', d['save_path'], 'Output PNG folder.', flag_values=fv)
    if mode == 'box':
        flags.DEFINE_string('BoxXmlpath', '/your/path/VOCdevkit/VOC2012/Annotations', 'VOC XML folder.',
                            flag_values=fv)
        flags.DEFINE_bool('one_based_boxes', False, 'Subtract 1 from VOC box coordinates (the original uses them '
                          'as 0-based: boxes shifted 1 px).', flag_values=fv)
    else:
        flags.DEFINE_string('cam_dir', '/your/path/cam', 'SEAM CAM dicts (infer_seam --out_cam), for --rw.',
                            flag_values=fv)
        flags.DEFINE_float('alpha', 6, 'Background power of the walked CAMs.', flag_values=fv)
        flags.DEFINE_integer('rw_weight', 3, 'Weight of the walked CAMs.', flag_values=fv)
        flags.DEFINE_integer('logt', 6, 'log2 of the walk length.', flag_values=fv)
        flags.DEFINE_integer('beta', 8, 'Affinity power of the walk.', flag_values=fv)
        flags.DEFINE_string('rw', 'False', 'Fuse the random walk of the CAMs (a real boolean: True/False).',
                            flag_values=fv)
    flags.DEFINE_float('width_multiplier', 1.0, 'ResNet-38 width scale (reduced trunks for CPU tests).',
                       flag_values=fv)
    flags.DEFINE_enum('graph', 'sparse', ['sparse', 'dense'], 'GNN graph form: window attention (same numbers, '
                      'less time and memory) or the original dense N x N matrices.', flag_values=fv)
    flags.DEFINE_integer('gnn_seed', 0, 'Seed of the GNN initialisation and dropout.', flag_values=fv)


def build_net(weights, width_multiplier, seed=0):
    """The gated affinity net with `weights` loaded by name (strict=False, as the originals); without weights,
    initialised from scratch, reproducibly from `seed` (Keras's global seed is set to it)."""
    import keras
    from a2gnn.affinity import build_gated_affinity_net
    from affinitynet.model import load_weights
    if not weights:
        keras.utils.set_random_seed(seed)
    net = build_gated_affinity_net(width_multiplier, from_scratch=not weights, seed=seed)
    if weights:
        load_weights(net, weights, strict=False)
    else:
        logging.warning('--weights is empty: the gated affinity net keeps its random (from-scratch) initialisation')
    return net


def read_image(voc12_root, name):
    """uint8 [H, W, 3] RGB image of an id (`affinitynet.runtime.read_image`: missing / truncated files named)."""
    from affinitynet.runtime import read_image as read_psa_image
    return read_psa_image(voc12_root, name)


def main(mode, flag_values=None, progress=True):
    """Runs one script over its list; returns the list of written PNG paths."""
    from tqdm import tqdm
    from a2gnn.infer import pseudo_label
    from a2gnn.seeds import read_seed, read_xml_annotation
    from affinitynet.cam import from_dict, load_dict
    from common.data.lists import load_img_name_list
    from common.io import save_png
    fv = flags.FLAGS if flag_values is None else flag_values
    try:
        rw = False if mode == 'box' else str2bool(fv.rw)
    except ValueError as error:
        raise app.UsageError(f'--rw: {error}') from error
    for flag in ('epochs', 'radius', 'hidden'):
        if getattr(fv, flag) < 1:
            raise app.UsageError(f'--{flag} must be positive, got {getattr(fv, flag)}')
    if not os.path.isdir(fv.seed_label_root):
        raise app.UsageError(f'--seed_label_root: no such directory: {fv.seed_label_root}')
    names = load_img_name_list(fv.infer_list)
    check_output_flags(fv, 'save_path')
    net = None
    written = []
    for name in tqdm(names, desc=f'A2GNN {mode}', disable=not progress):
        out_path = os.path.join(fv.save_path, name + '.png')
        if os.path.exists(out_path):
            logging.info('%s exists: skipped', out_path)
            continue
        img = read_image(fv.voc12_root, name)
        seed = read_seed(os.path.join(fv.seed_label_root, name + '.png'), img.shape)
        boxes = box_class = cam = None
        if mode == 'box':
            box_class, boxes = read_xml_annotation(os.path.join(fv.BoxXmlpath, name + '.xml'), fv.one_based_boxes)
        if rw:
            cam = from_dict(load_dict(os.path.join(fv.cam_dir, name + '.npy'), 'CAM'))
            if cam[1] is None or cam[1].shape[:2] != img.shape[:2]:
                raise ValueError(f'{os.path.join(fv.cam_dir, name + ".npy")}: CAMs must be {img.shape[0]}x'
                                 f'{img.shape[1]} with at least one class')
        if net is None:
            net = build_net(fv.weights, fv.width_multiplier, fv.gnn_seed)
        result = pseudo_label(net, img, seed, mode, fv.radius, fv.epochs, fv.lr, boxes, box_class, rw=rw, cam=cam,
                              alpha=getattr(fv, 'alpha', 6.0), beta=getattr(fv, 'beta', 8),
                              logt=getattr(fv, 'logt', 6), rw_weight=getattr(fv, 'rw_weight', 3), hidden=fv.hidden,
                              dropout=fv.dropout, weight_decay=fv.weight_decay, graph=fv.graph,
                              random_seed=fv.gnn_seed, log=lambda m, n=name: logging.warning('%s: %s', n, m))
        written.append(save_png(out_path, result['label'], 'L'))
    return written
