"""AAF inference: single-scale sliding window (`inference.py`) or multi-scale + flip (`inference_msc.py`).

    python -m aaf.inference --data-dir VOCdevkit/ --data-list dataset/voc12/val.txt --input-size 480,480 \
        --strides 320,320 --restore-from snapshots/aaf/stage1/model.ckpt-30000 --colormap voc \
        --num-classes 21 --save-dir snapshots/aaf/stage1/results/val

Writes `<save-dir>/gray/<name>.png` (label ids) and `<save-dir>/color/<name>.png`. `--colormap` takes `voc`,
`cityscapes` or the originals' `misc/colormap*.mat` files. Checkpoints of this project and TF1/Slim checkpoints of
the original code are both accepted by `--restore-from`.
"""
import os

from absl import flags, logging

from common.cli import run_app
from common.data.aaf_reader import IMG_MEAN
from common.data.lists import read_labeled_image_list
from common.infer.outputs import run_inference
from common.io import check_writable_dir
from common.models.factory import define_model_flags, model_from_flags, parse_int_list
from common.train.checkpoints import restore_variables

FLAGS = flags.FLAGS


def define_flags(msc, flag_values=FLAGS):
    """The originals' inference flags (aaf_segsort.md 1.1); `msc` adds --flip_aug / --scale_aug.

    Args:
      msc: define the multi-scale flags too (`aaf.inference_msc`).
      flag_values: the absl `FlagValues` to define them in (default the global FLAGS; tests pass a fresh one).
    """
    fv = dict(flag_values=flag_values)
    flags.DEFINE_string('data_dir', '', 'Prefix joined to the list entries by plain concatenation.', **fv)
    flags.DEFINE_string('data_list', '', 'List file (two columns, or one column of images).', **fv)
    flags.DEFINE_string('input_size', '512,512', 'Window "H,W" the network is built for.', **fv)
    flags.DEFINE_string('strides', '512,512', 'Window strides "H,W".', **fv)
    flags.DEFINE_integer('num_classes', 21, 'Number of classes.', **fv)
    flags.DEFINE_integer('ignore_label', 255, 'Start value of the score accumulator (the original uses 255).', **fv)
    flags.DEFINE_string('restore_from', '', 'Checkpoint prefix or snapshot directory.', **fv)
    flags.DEFINE_string('save_dir', '', 'Output directory (gray/ and color/).', **fv)
    flags.DEFINE_string('colormap', 'voc', 'voc, cityscapes, or an original colormap*.mat file.', **fv)
    flags.DEFINE_boolean('save_probabilities', False, 'Also save the summed class scores as .npy.', **fv)
    flags.DEFINE_boolean('fix_basename', False, 'Replace only the ".jpg" extension (the original replaces every '
                         '"jpg" in the file name).', **fv)
    flags.DEFINE_boolean('progress', True, 'Show a progress bar.', **fv)
    if msc:
        flags.DEFINE_boolean('flip_aug', False, 'Add left-right flipped passes.', **fv)
        flags.DEFINE_boolean('scale_aug', False, 'Scales 0.5, 0.75, 1, 1.25, 1.5, 1.75 instead of 1.', **fv)
    define_model_flags(flag_values)


def load_inference_model(cfg, input_size):
    """Builds the inference graph (moving BN statistics) and restores `--restore-from` by original names."""
    if not cfg.restore_from:
        raise ValueError('--restore-from is required (a checkpoint prefix or a snapshot directory)')
    model = model_from_flags(cfg, cfg.num_classes, input_size, training=False)
    restored, missing, _ = restore_variables(model.variables, cfg.restore_from, model=model)
    if missing:
        raise ValueError(f'--restore-from {cfg.restore_from}: {len(missing)} of the model\'s variables are not in '
                         f'the checkpoint (e.g. {missing[:3]}); check --model / --backbone-* / --psp-channels / '
                         f'--num-classes')
    logging.info('restored %d variables from %s', len(restored), cfg.restore_from)
    return model


def predict_list(cfg, msc):
    """Runs the model over every image of the list and writes the outputs; returns the written paths."""
    if not cfg.data_list:
        raise ValueError('--data-list is required')
    if not os.path.isfile(cfg.data_list):
        raise FileNotFoundError(f'--data-list: list file not found: {cfg.data_list}')
    if not cfg.save_dir:
        raise ValueError('--save-dir is required')
    input_size = parse_int_list(cfg.input_size, 'input_size', 2)
    strides = parse_int_list(cfg.strides, 'strides', 2)
    image_paths, _ = read_labeled_image_list(cfg.data_dir, cfg.data_list)
    check_writable_dir(cfg.save_dir, '--save-dir')
    model = load_inference_model(cfg, input_size)
    return run_inference(model, image_paths, cfg.save_dir, input_size, strides, cfg.num_classes, cfg.colormap,
                         msc=msc, flip_aug=msc and cfg.flip_aug, scale_aug=msc and cfg.scale_aug,
                         ignore_label=cfg.ignore_label, img_mean=IMG_MEAN,
                         save_probabilities=cfg.save_probabilities, fix_basename=cfg.fix_basename,
                         progress=cfg.progress)


def run(msc=False):
    """Console scripts `aaf-inference` and (msc=True) `aaf-inference-msc`."""
    define_flags(msc=msc)

    def main(argv):
        del argv
        written = predict_list(FLAGS, msc=msc)
        print(f'wrote {len(written)} predictions to {FLAGS.save_dir}')

    run_app(main)


if __name__ == '__main__':
    run()
