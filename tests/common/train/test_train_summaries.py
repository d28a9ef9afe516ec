"""Image/scalar summaries: de-meaned input, coloured GT and prediction; events readable without tensorboard."""
import numpy as np
import tensorflow as tf

from common.colormap import voc_colormap
from common.train import summaries


def test_image_row_layout_and_colours():
    mean = (122.675, 116.669, 104.008)
    rng = np.random.RandomState(0)
    raw = rng.randint(0, 256, (2, 16, 16, 3)).astype(np.float32)
    images = raw - np.float32(mean)
    labels = rng.randint(0, 3, (2, 16, 16, 1))
    labels[0, :4] = 255
    logits = np.zeros((2, 2, 2, 3), np.float32)
    logits[0, 0, 1, 2] = 5.0  # top-right 8x8 block of image 0 predicted as class 2
    logits[1, ..., 1] = 1.0
    rows = summaries.image_row(images, labels, logits, mean, 'voc')
    assert rows.shape == (2, 16, 48, 3) and rows.dtype == np.uint8
    np.testing.assert_array_equal(rows[:, :, :16], np.clip(images + np.float32(mean), 0, 255).astype(np.uint8))
    cmap = voc_colormap()
    np.testing.assert_array_equal(rows[:, :, 16:32], cmap[labels[..., 0]])
    pred0 = np.zeros((16, 16), int)
    pred0[:8, 8:] = 2
    np.testing.assert_array_equal(rows[0, :, 32:], cmap[pred0])
    np.testing.assert_array_equal(rows[1, :, 32:], cmap[np.ones((16, 16), int)])
    # Shrunk labels are resized (nearest) to the image size.
    small = summaries.image_row(images, labels[:, ::8, ::8], logits, mean, 'voc')
    np.testing.assert_array_equal(small[0, :8, 16:24], np.broadcast_to(cmap[labels[0, 0, 0, 0]], (8, 8, 3)))


def test_events_are_written(tmp_path):
    writer = tf.summary.create_file_writer(str(tmp_path))
    summaries.write_scalars(writer, 7, {'seg_loss': 1.5})
    summaries.write_images(writer, 7, 'images', np.full((1, 4, 6, 3), 9, np.uint8))
    writer.flush()
    (event_file,) = list(tmp_path.iterdir())
    seen = {}
    for event in tf.compat.v1.train.summary_iterator(str(event_file)):
        for value in event.summary.value:
            seen[value.tag] = (event.step, value.metadata.plugin_data.plugin_name, tf.make_ndarray(value.tensor))
    assert seen['seg_loss'][:2] == (7, 'scalars') and float(seen['seg_loss'][2]) == 1.5
    step, plugin, blobs = seen['images']
    assert (step, plugin) == (7, 'images') and blobs[:2].tolist() == [b'6', b'4']
    np.testing.assert_array_equal(tf.io.decode_png(blobs[2]).numpy(), np.full((4, 6, 3), 9, np.uint8))
    assert summaries.progress_text(1.23456, 2.5e-4) == 'loss = 1.235, lr = 0.000250'
