"""TensorBoard summaries and the progress-bar text of the training engine.

Like the originals (every `--update-tb-every` steps, on the last iter-size iteration): one scalar per loss term,
the total loss and the LR, and an 'images' summary with input | ground truth | prediction side by side per image
(input de-meaned back to uint8, labels coloured with `common.colormap.colorize`).

Written with the low-level `tf.summary.write` and the TensorBoard plugin metadata ('scalars', 'images'), because
`tf.summary.scalar/image` need the `tensorboard` package, which a training machine may lack; TensorBoard reads the
events the same way.
"""
import numpy as np
import tensorflow as tf

from common.colormap import colorize
from common.ops.resize import resize_nearest_legacy


def inv_preprocess(images, image_mean):
    """Mean-subtracted RGB float [N,H,W,3] -> uint8 [N,H,W,3] (adds the mean back, clips to 0..255)."""
    return np.clip(np.asarray(images, np.float32) + np.asarray(image_mean, np.float32), 0, 255).astype(np.uint8)


def prediction_labels(logits, size):
    """Argmax labels of logits [N,h,w,C] resized (nearest, TF1 semantics) to `size` (H, W) -> int [N,H,W]."""
    resized = resize_nearest_legacy(tf.convert_to_tensor(logits), size)
    return tf.argmax(resized, axis=-1).numpy()


def image_row(images, labels, logits, image_mean, colormap='voc', max_outputs=None):
    """The 'images' summary: [input | ground truth | prediction] concatenated along the width.

    Args:
      images: float [N,H,W,3] mean-subtracted RGB.
      labels: int [N,H,W] or [N,H,W,1] (255 = ignore); other sizes are resized (nearest) to the image's.
      logits: float [N,h,w,C] network output.
      image_mean: the subtracted mean (3 floats).
      colormap: name for `common.colormap.colorize`.
      max_outputs: keep at most this many images.
    Returns:
      uint8 [N, H, 3W, 3].
    """
    images = np.asarray(images)[:max_outputs]
    labels = np.asarray(labels)[:max_outputs]
    if labels.ndim == 3:
        labels = labels[..., None]
    if labels.shape[1:3] != images.shape[1:3]:  # labels already shrunk to the output size
        labels = resize_nearest_legacy(labels, images.shape[1:3]).numpy()
    labels = labels[..., 0]
    preds = prediction_labels(np.asarray(logits)[:max_outputs], images.shape[1:3])
    rows = [np.concatenate([inv_preprocess(img, image_mean), colorize(lab, colormap), colorize(pred, colormap)],
                           axis=1) for img, lab, pred in zip(images, labels, preds)]
    return np.stack(rows)


def _metadata(plugin_name, data_class):
    from tensorflow.core.framework import summary_pb2
    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = plugin_name
    metadata.data_class = data_class
    return metadata


def write_scalars(writer, step, scalars):
    """Writes {name: float} as TensorBoard scalars at `step`."""
    from tensorflow.core.framework import summary_pb2
    metadata = _metadata('scalars', summary_pb2.DATA_CLASS_SCALAR)
    with writer.as_default(step=step):
        for name, value in scalars.items():
            tf.summary.write(name, tf.constant(float(value), tf.float32), metadata=metadata)


def write_images(writer, step, name, images_uint8):
    """Writes a uint8 [N,H,W,3] batch as a TensorBoard image summary (PNG-encoded, all N images)."""
    from tensorflow.core.framework import summary_pb2
    images = np.asarray(images_uint8, np.uint8)
    height, width = images.shape[1:3]
    encoded = [tf.io.encode_png(img) for img in images]
    tensor = tf.stack([tf.as_string(width), tf.as_string(height)] + encoded)
    with writer.as_default(step=step):
        tf.summary.write(name, tensor, metadata=_metadata('images', summary_pb2.DATA_CLASS_BLOB_SEQUENCE))


def progress_text(loss, lr):
    """The originals' tqdm description."""
    return f'loss = {loss:.3f}, lr = {lr:.6f}'
