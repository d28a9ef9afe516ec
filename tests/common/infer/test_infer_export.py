"""SavedModel export: in-graph sliding window reloaded in a process that never imports this project."""
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from common.infer import IMG_MEAN, sliding_window_scores, window_ends
from common.infer.export import export_saved_model, load_checkpoint, window_ends_tf

# Runs in a fresh interpreter outside the repository: only TensorFlow and NumPy.
SERVE_SCRIPT = '''
import sys
import numpy as np
import tensorflow as tf
export_dir, image_path, out_path = sys.argv[1:4]
serve = tf.saved_model.load(export_dir).signatures['serving_default']
out = serve(image=tf.constant(np.load(image_path)))
leaked = [name for name in sys.modules if name == 'common' or name.startswith('common.')]
assert not leaked, f'the SavedModel pulled in project modules: {leaked}'
np.savez(out_path, classes=out['classes'].numpy(), probabilities=out['probabilities'].numpy())
'''


def serve_in_fresh_process(export_dir, image, tmp_path):
    np.save(tmp_path / 'image.npy', image)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH='')
    result = subprocess.run([sys.executable, '-c', SERVE_SCRIPT, str(export_dir), str(tmp_path / 'image.npy'),
                             str(tmp_path / 'served.npz')], cwd=str(tmp_path), env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    served = np.load(tmp_path / 'served.npz')
    return served['classes'], served['probabilities']


def stand_in_model(num_classes):
    """Same call contract as the project's builders: images [N, h, w, 3] -> logits [N, h/8, w/8, C]."""
    keras.utils.set_random_seed(3)
    images = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(num_classes, 1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.05),
                            bias_initializer=keras.initializers.RandomNormal(stddev=0.5))(images)
    return keras.Model(images, keras.layers.AveragePooling2D(8, 8)(x))


def reduced_pspnet(num_classes, seed):
    """A depth-1, width-1/16 PSPNet (input 48 x 48) from the project's builder."""
    from common.models.pspnet import build_pspnet
    keras.utils.set_random_seed(seed)
    return build_pspnet(num_classes, (48, 48), backbone=dict(filters=(4, 8, 16, 32), num_blocks=(1, 1, 1, 1)),
                        psp_channels=8, use_global_status=True, is_training=False)


def pspnet_available():
    try:
        import common.models.pspnet  # noqa: F401
    except ImportError:
        return False
    return True


def test_in_graph_window_ends_equal_numpy_linspace():
    for padded in (24, 25, 45, 50, 70, 480, 500, 1024, 1162, 2048, 2049):
        for window, stride in ((24, 16), (32, 7), (480, 320), (720, 480)):
            if padded >= window:
                np.testing.assert_array_equal(window_ends_tf(tf.constant(padded), window, stride).numpy(),
                                              window_ends(padded, window, stride))


def check_round_trip(model, input_size, strides, num_classes, tmp_path, image_hw):
    export_dir = tmp_path / 'saved_model'
    export_saved_model(model, str(export_dir), input_size, num_classes, strides=strides)
    image = np.random.default_rng(0).integers(0, 256, image_hw + (3,), dtype=np.uint8)
    classes, probabilities = serve_in_fresh_process(export_dir, image, tmp_path)

    mean_subtracted = image.astype(np.float32) - np.float32(IMG_MEAN)
    faithful = sliding_window_scores(mean_subtracted, model, input_size, strides, num_classes)
    expected_classes = np.argmax(faithful, axis=-1)
    assert classes.dtype == np.int32 and classes.shape == image_hw
    assert len(np.unique(expected_classes)) > 1  # a constant map would not test the tiling
    np.testing.assert_array_equal(classes, expected_classes)
    mean_probs = sliding_window_scores(mean_subtracted, model, input_size, strides, num_classes,
                                       init_with_zero=True, average=True)
    assert probabilities.shape == image_hw + (num_classes,)
    np.testing.assert_allclose(probabilities, mean_probs, rtol=1e-5, atol=1e-5)


def test_saved_model_round_trip_matches_in_process_prediction(tmp_path):
    # Odd image sizes: smaller than the window in one direction (padding), several windows in the other.
    if pspnet_available():
        check_round_trip(reduced_pspnet(5, seed=0), (48, 48), (32, 32), 5, tmp_path, (41, 83))
    else:
        check_round_trip(stand_in_model(4), (32, 32), (16, 16), 4, tmp_path, (29, 41))


def named_stand_in_model(num_classes, seed):
    """The stand-in with fixed layer names, so two instances share variable names (checkpoints go by name)."""
    keras.utils.set_random_seed(seed)
    images = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(num_classes, 1, name='classifier')(images)
    return keras.Model(images, keras.layers.AveragePooling2D(8, 8, name='pool')(x))


def test_training_checkpoint_restores_into_a_fresh_model(tmp_path):
    from common.train.checkpoints import make_checkpoint
    trained = named_stand_in_model(3, seed=3)
    manager = tf.train.CheckpointManager(make_checkpoint(trained.variables), str(tmp_path / 'ckpt'), 1,
                                         checkpoint_name='model.ckpt')
    manager.save(checkpoint_number=7)
    fresh = named_stand_in_model(3, seed=4)
    assert not np.array_equal(fresh.weights[0].numpy(), trained.weights[0].numpy())
    load_checkpoint(fresh, str(tmp_path / 'ckpt'))  # a directory resolves to its latest checkpoint
    for restored, saved in zip(fresh.weights, trained.weights):
        np.testing.assert_array_equal(restored.numpy(), saved.numpy())


def test_checkpoint_errors_name_the_problem(tmp_path):
    from common.train.checkpoints import make_checkpoint
    with pytest.raises(FileNotFoundError, match='missing_ckpt'):
        load_checkpoint(stand_in_model(2), str(tmp_path / 'missing_ckpt'))
    other = named_stand_in_model(3, seed=3)
    prefix = make_checkpoint(other.variables).save(str(tmp_path / 'other' / 'model.ckpt'))
    images = keras.Input((None, None, 3))
    renamed = keras.Model(images, keras.layers.Conv2D(3, 1, name='head')(images))
    with pytest.raises(ValueError, match='not in the checkpoint'):
        load_checkpoint(renamed, prefix)


# Fresh interpreter again: the batch signature equals the single-image one per image, and bad inputs are refused at
# the signature with a message that names it and the expected shape.
SIGNATURES_SCRIPT = '''
import json, sys
import numpy as np
import tensorflow as tf
export_dir, out_path = sys.argv[1:3]
loaded = tf.saved_model.load(export_dir)
single, batch = loaded.signatures['serving_default'], loaded.signatures['serving_batch']
rng = np.random.default_rng(1)
images = rng.integers(0, 256, (3, 29, 41, 3), dtype=np.uint8)
batched = batch(images=tf.constant(images))
each = [single(image=tf.constant(image)) for image in images]
errors = {}
for name, fn, arg, value in [
        ('float_image', single, 'image', np.zeros((29, 41, 3), np.float32)),
        ('batch_to_single', single, 'image', images[:1]),
        ('gray_image', single, 'image', np.zeros((29, 41), np.uint8)),
        ('four_channels', single, 'image', np.zeros((29, 41, 4), np.uint8)),
        ('image_to_batch', batch, 'images', images[0]),
        ('float_batch', batch, 'images', images.astype(np.float32))]:
    try:
        fn(**{arg: tf.constant(value)})
        errors[name] = None
    except (tf.errors.InvalidArgumentError, TypeError, ValueError) as err:
        errors[name] = str(err)
leaked = [name for name in sys.modules if name == 'common' or name.startswith('common.')]
assert not leaked, leaked
np.savez(out_path, batch_classes=batched['classes'].numpy(), batch_probabilities=batched['probabilities'].numpy(),
         each_classes=np.stack([e['classes'].numpy() for e in each]),
         each_probabilities=np.stack([e['probabilities'].numpy() for e in each]),
         errors=json.dumps(errors))
'''


def test_batch_signature_and_input_errors_at_the_signature(tmp_path):
    import json
    export_dir = tmp_path / 'saved_model'
    export_saved_model(stand_in_model(4), str(export_dir), (32, 32), 4, strides=(16, 16))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH='')
    result = subprocess.run([sys.executable, '-c', SIGNATURES_SCRIPT, str(export_dir), str(tmp_path / 'out.npz')],
                            cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = np.load(tmp_path / 'out.npz')
    assert out['batch_classes'].shape == (3, 29, 41) and out['batch_probabilities'].shape == (3, 29, 41, 4)
    np.testing.assert_array_equal(out['batch_classes'], out['each_classes'])
    np.testing.assert_allclose(out['batch_probabilities'], out['each_probabilities'], rtol=1e-6, atol=1e-6)
    errors = json.loads(str(out['errors']))
    assert 'expected to be a uint8 tensor' in errors['float_image']
    assert 'expected to be a uint8 tensor' in errors['float_batch']
    for name in ('batch_to_single', 'gray_image', 'four_channels'):
        assert 'serving_default: `image` must be a uint8 RGB tensor [H, W, 3]' in errors[name], errors[name]
    assert 'serving_batch' in errors['batch_to_single']  # points to the right signature
    assert 'serving_batch: `images` must be a uint8 RGB tensor [N, H, W, 3]' in errors['image_to_batch']
    assert 'Pad' not in errors['batch_to_single']


def test_export_cli_refuses_an_output_folder_it_cannot_write(tmp_path, temporary_flags):
    from common.cli import normalize_flag_names
    from common.infer import export
    fv = temporary_flags(export._define_flags)
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    fv(normalize_flag_names(['export', f'--checkpoint={tmp_path}', f'--out={blocker}/model', '--input-size=48,48']))
    with pytest.raises(OSError, match=r'--out .*a_file: cannot write to the output folder'):
        export.main([])
