"""SavedModel export of a segmentation model with the whole inference inside the graph.

The `serving_default` signature takes a uint8 RGB image `image` [H, W, 3] of any size and returns
`{'classes': int32 [H, W], 'probabilities': float32 [H, W, C]}`; `serving_batch` takes `images` [N, H, W, 3] (one
size per batch, as TF Serving's request batching delivers them) and returns `classes` [N, H, W] and `probabilities`
[N, H, W, C], each image computed exactly as `serving_default` does. Both check their input first: a tensor of the
wrong rank or channel count stops with a message that names the signature and the expected shape (a wrong dtype is
refused by the signature itself: "expected to be a uint8 tensor"). Inside the graph: cast to float32, subtract the
RGB mean, zero-pad bottom/right to at least the window, run the model on every window of `inference.py`'s
tiling (same linspace end indices, same order), upsample each window's logits with the legacy bilinear resize,
softmax, and accumulate. `classes` is the argmax of the faithful accumulator (initialised to `ignore_label`,
exactly what `sliding_window_predict` computes); `probabilities` is the per-pixel mean of the window
probabilities (no 255 offset). The exported model needs neither this project nor Keras to run:

    sig = tf.saved_model.load(out_dir).signatures['serving_default']
    out = sig(image=tf.constant(uint8_image))  # out['classes'], out['probabilities']
    batch = tf.saved_model.load(out_dir).signatures['serving_batch']
    out = batch(images=tf.constant(uint8_images))  # [N, H, W] and [N, H, W, C]

CLI:
    python -m common.infer.export --model pspnet --checkpoint CKPT --out DIR --num-classes 21 \
        --input-size 480,480 [--strides 320,320 --backbone-filters 64,128,256,512 --backbone-blocks 3,4,23,3
        --psp-channels 512]
"""
import os

import numpy as np
import tensorflow as tf

from common.infer import IMG_MEAN
from common.infer.sliding_window import resize_bilinear_legacy


def window_ends_tf(padded, window, stride):
    """In-graph `window_ends`: float64 arithmetic identical to `np.linspace(..., dtype=np.int32)`.

    Args:
      padded: int32 scalar tensor (>= window); window, stride: Python ints.
    Returns:
      int32 tensor [n].
    """
    padded = tf.cast(padded, tf.int32)
    count = (padded - window + stride - 1) // stride + 1  # == ceil((padded - window) / stride) + 1
    delta = tf.cast(padded - window, tf.float64)
    step = delta / tf.cast(tf.maximum(count - 1, 1), tf.float64)
    ends = tf.cast(tf.range(count), tf.float64) * step + float(window)
    # linspace pins the last point to `stop` exactly.
    ends = tf.concat([ends[:-1], tf.cast(padded, tf.float64)[tf.newaxis]], axis=0)
    return tf.cast(tf.floor(ends), tf.int32)


def make_serving_fn(model, input_size, num_classes, strides=None, img_mean=IMG_MEAN, ignore_label=255):
    """The serving computation (not yet a tf.function): uint8 [H, W, 3] -> {'classes', 'probabilities'}.

    Args:
      model: keras.Model (or callable) images [1, in_h, in_w, 3] -> logits [1, in_h/8, in_w/8, num_classes].
      input_size: (in_h, in_w) window size; strides: (stride_h, stride_w), default = input_size.
      num_classes: number of classes; img_mean: RGB mean; ignore_label: accumulator start value (Q-A14).
    Returns:
      callable(image uint8 tensor [H, W, 3]) -> dict.
    """
    in_h, in_w = (int(v) for v in input_size)
    stride_h, stride_w = (int(v) for v in (strides or input_size))
    mean = tf.constant(np.asarray(img_mean, np.float32))

    def serve(image):
        image = tf.cast(image, tf.float32) - mean
        height, width = tf.shape(image)[0], tf.shape(image)[1]
        padded_h, padded_w = tf.maximum(height, in_h), tf.maximum(width, in_w)
        padded = tf.pad(image, [[0, padded_h - height], [0, padded_w - width], [0, 0]])
        ends_h = window_ends_tf(padded_h, in_h, stride_h)
        ends_w = window_ends_tf(padded_w, in_w, stride_w)
        num_w = tf.size(ends_w)
        num_windows = tf.size(ends_h) * num_w

        def body(k, acc, total, count):
            end_h, end_w = ends_h[k // num_w], ends_w[k % num_w]
            window = padded[end_h - in_h:end_h, end_w - in_w:end_w]
            window = tf.ensure_shape(window, [in_h, in_w, 3])[tf.newaxis]
            logits = model(window, training=False) if _is_keras_model(model) else model(window)
            probs = tf.nn.softmax(resize_bilinear_legacy(logits, (in_h, in_w)), axis=-1)[0]
            placement = [[end_h - in_h, padded_h - end_h], [end_w - in_w, padded_w - end_w], [0, 0]]
            # Adding zeros outside the window leaves those pixels bit-identical, so `acc` follows the
            # original's in-place window sums exactly (same order: rows outer, columns inner).
            contribution = tf.pad(probs, placement)
            return (k + 1, acc + contribution, total + contribution,
                    count + tf.pad(tf.ones([in_h, in_w, 1]), placement))

        canvas = tf.stack([padded_h, padded_w])
        acc = tf.fill(tf.concat([canvas, [num_classes]], 0), tf.constant(float(ignore_label), tf.float32))
        total = tf.zeros(tf.concat([canvas, [num_classes]], 0), tf.float32)
        count = tf.zeros(tf.concat([canvas, [1]], 0), tf.float32)
        _, acc, total, count = tf.while_loop(lambda k, *_: k < num_windows, body,
                                             (tf.constant(0), acc, total, count))
        classes = tf.argmax(acc[:height, :width], axis=-1, output_type=tf.int32)
        probabilities = (total / count)[:height, :width]
        return {'classes': classes, 'probabilities': tf.ensure_shape(probabilities, [None, None, num_classes])}

    return serve


def checked_input(tensor, rank, signature, argument):
    """`tensor` after an in-graph check that it has `rank` dimensions and 3 channels; a clear error otherwise.

    The signatures declare an unknown rank on purpose: with a declared [H, W, 3] a serving runtime feeds any shape
    straight into the graph, and the rank would then be a constant to TensorFlow, so the check could not run.

    Args:
      tensor: the signature's input.
      rank: 3 (one image) or 4 (a batch).
      signature, argument: names used in the message.
    Returns:
      the tensor with its static shape set ([None, None, 3] or [None, None, None, 3]).
    """
    expected = '[H, W, 3]' if rank == 3 else '[N, H, W, 3]'
    shape = tf.shape(tensor)
    padded = tf.concat([shape, tf.fill([rank], -1)], axis=0)
    ok = tf.logical_and(tf.equal(tf.size(shape), rank), tf.equal(padded[rank - 1], 3))
    hint = ('; send a batch to the `serving_batch` signature' if rank == 3 else
            '; send a single image to `serving_default`')
    check = tf.debugging.Assert(ok, [f'{signature}: `{argument}` must be a uint8 RGB tensor {expected}{hint}; got '
                                     f'shape', shape], summarize=8)
    with tf.control_dependencies([check]):
        return tf.ensure_shape(tf.identity(tensor), [None] * (rank - 1) + [3])


def make_batch_serving_fn(serve, num_classes):
    """Batched serving: uint8 [N, H, W, 3] -> {'classes' [N, H, W], 'probabilities' [N, H, W, C]}.

    Args:
      serve: the single-image function of `make_serving_fn`; each image of the batch goes through it.
      num_classes: C.
    """
    def serve_batch(images):
        images = checked_input(images, 4, 'serving_batch', 'images')
        return tf.map_fn(serve, images, fn_output_signature={
            'classes': tf.TensorSpec([None, None], tf.int32),
            'probabilities': tf.TensorSpec([None, None, num_classes], tf.float32)})

    return serve_batch


def _is_keras_model(obj):
    import keras
    return isinstance(obj, keras.Model)


def export_saved_model(model, out_dir, input_size, num_classes, strides=None, img_mean=IMG_MEAN, ignore_label=255):
    """Writes a SavedModel whose `serving_default` does the full sliding-window inference of one image, and whose
    `serving_batch` does it for each image of a batch [N, H, W, 3].

    Args:
      model: keras.Model images [N, in_h, in_w, 3] (mean-subtracted RGB float32) -> logits [N, in_h/8, in_w/8, C].
      out_dir: SavedModel directory (created; replaced if it exists).
      input_size: (in_h, in_w) window size (PSPNet: its build size).
      num_classes: C.
      strides: (stride_h, stride_w) of the tiling; default = input_size (no overlap).
      img_mean: RGB mean subtracted inside the graph.
      ignore_label: accumulator start value (only affects ties; faithful 255).
    Returns:
      out_dir.

    Example:
      export_saved_model(build_pspnet(21, (480, 480)), '/tmp/psp', (480, 480), 21, strides=(320, 320))
    """
    import keras
    serve = make_serving_fn(model, input_size, num_classes, strides=strides, img_mean=img_mean,
                            ignore_label=ignore_label)
    archive = keras.export.ExportArchive()
    archive.track(model)
    def serve_default(image):
        return serve(checked_input(image, 3, 'serving_default', 'image'))

    archive.add_endpoint(name='serving_default', fn=serve_default,
                         input_signature=[tf.TensorSpec(None, tf.uint8, name='image')])
    archive.add_endpoint(name='serving_batch', fn=make_batch_serving_fn(serve, num_classes),
                         input_signature=[tf.TensorSpec(None, tf.uint8, name='images')])
    tmp_dir = out_dir.rstrip('/') + '.tmp_export'
    if tf.io.gfile.exists(tmp_dir):
        tf.io.gfile.rmtree(tmp_dir)
    archive.write_out(tmp_dir, verbose=False)
    # Replace the destination only once the new export is complete.
    if tf.io.gfile.exists(out_dir):
        tf.io.gfile.rmtree(out_dir)
    os.replace(tmp_dir, out_dir)
    return out_dir


def load_checkpoint(model, ckpt_path):
    """Restores every model variable by its original name; missing variables are an error.

    Args:
      model: the built keras.Model.
      ckpt_path: a checkpoint prefix or a directory (its latest checkpoint) written by the training engine
        (`common.train.checkpoints`), or a TF1/Slim checkpoint of the original code.
    Returns:
      the names restored.
    """
    from common.train.checkpoints import restore_variables
    restored, missing, _ = restore_variables(model.variables, ckpt_path, model=model)
    if missing:
        raise ValueError(f'--checkpoint {ckpt_path}: {len(missing)} model variables are not in the checkpoint '
                         f'(e.g. {missing[:3]}); check --model, --backbone-filters/-blocks, --psp-channels and '
                         f'--num-classes')
    return restored


def _define_flags():
    from absl import flags
    from common.models.factory import define_model_flags
    flags.DEFINE_string('checkpoint', None, 'Checkpoint prefix or snapshot directory (this project or TF1/Slim).')
    flags.DEFINE_string('out', None, 'Output SavedModel directory.')
    flags.DEFINE_integer('num_classes', 21, 'Number of classes.')
    flags.DEFINE_string('input_size', '480,480', 'Window size H,W (PSPNet build size).')
    flags.DEFINE_string('strides', '', 'Window strides H,W (default: input size).')
    flags.DEFINE_integer('ignore_label', 255, 'Accumulator start value (faithful 255).')
    define_model_flags()
    flags.mark_flags_as_required(['checkpoint', 'out'])


def main(argv):
    from absl import flags
    del argv
    cfg = flags.FLAGS
    from common.models.factory import model_from_flags, parse_int_list
    from common.train.checkpoints import resolve_checkpoint
    from common.io import check_writable_dir
    input_size = parse_int_list(cfg.input_size, 'input_size', 2)
    strides = parse_int_list(cfg.strides, 'strides', 2) if cfg.strides else input_size
    # Fail before the (slow) model build: the export is written next to --out, then renamed into place.
    check_writable_dir(os.path.dirname(os.path.abspath(cfg.out)), '--out')
    resolve_checkpoint(cfg.checkpoint, flag='--checkpoint')
    model = model_from_flags(cfg, cfg.num_classes, input_size, training=False)
    restored = load_checkpoint(model, cfg.checkpoint)
    export_saved_model(model, cfg.out, input_size, cfg.num_classes, strides=strides, ignore_label=cfg.ignore_label)
    print(f'exported {cfg.model} ({len(restored)} variables from {cfg.checkpoint}) to {cfg.out}')


def run():
    """Console-script entry point (`affinity-seg-export`)."""
    from common.cli import run_app
    _define_flags()
    run_app(main)


if __name__ == '__main__':
    run()
