"""Prediction files, image decoding and the `run_inference` driver (spec 5.3)."""
import os

import numpy as np
import pytest
from PIL import Image

from common.colormap import colorize, cityscapes_colormap
from common.infer import IMG_MEAN
from common.infer.outputs import load_image, prediction_basename, run_inference, save_prediction
from test_infer_sliding_window import make_stub  # the golden cases' stub network


def test_basename_replaces_every_jpg_like_the_original():
    assert prediction_basename('/d/VOC2012/JPEGImages/2007_000033.jpg') == '2007_000033.png'
    assert prediction_basename('/d/x/a_jpg_b.jpg') == 'a_png_b.png'           # Q-A18, faithful
    assert prediction_basename('/d/x/a_jpg_b.jpg', fix_basename=True) == 'a_jpg_b.png'
    assert prediction_basename('/c/frankfurt_leftImg8bit.png') == 'frankfurt_leftImg8bit.png'


def test_save_prediction_writes_gray_color_and_scores(tmp_path):
    prediction = np.random.default_rng(0).integers(0, 19, (7, 9)).astype(np.uint8)
    prediction[0, 0] = 255
    scores = np.random.default_rng(1).random((7, 9, 19)).astype(np.float32)
    paths = save_prediction(prediction, str(tmp_path / 'out'), 'a.png', 'cityscapes', probabilities=scores)
    gray = Image.open(paths['gray'])
    assert gray.mode == 'L'
    np.testing.assert_array_equal(np.asarray(gray), prediction)
    color = Image.open(paths['color'])
    assert color.mode == 'RGB'
    np.testing.assert_array_equal(np.asarray(color), cityscapes_colormap()[prediction])
    assert tuple(np.asarray(color)[0, 1]) == tuple(cityscapes_colormap()[prediction[0, 1]])
    np.testing.assert_array_equal(np.load(paths['prob']), scores)
    assert paths['prob'].endswith(os.path.join('prob', 'a.npy'))
    # Atomic writes leave no temporary files behind.
    for sub in ('gray', 'color', 'prob'):
        assert os.listdir(tmp_path / 'out' / sub) == [os.path.basename(paths[sub])]


def test_load_image_subtracts_the_rgb_mean(tmp_path):
    pixels = np.random.default_rng(2).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / 'p.png')
    image = load_image(str(tmp_path / 'p.png'))
    assert image.dtype == np.float32
    np.testing.assert_allclose(image, pixels.astype(np.float32) - np.float32(IMG_MEAN), rtol=0, atol=1e-5)


def test_missing_image_names_the_path(tmp_path):
    missing = str(tmp_path / 'nope.jpg')
    with pytest.raises(FileNotFoundError, match='nope.jpg'):
        run_inference(lambda x: x, [missing], str(tmp_path / 'out'), (24, 24), (16, 16), 2, 'voc', progress=False)


def test_run_inference_single_scale_reproduces_the_original_files(golden, tmp_path):
    ins, outs, case = golden('aaf_sliding_window_inference')
    # A PNG named .jpg: the reader sniffs the format (Q-A21); the output name gets .png.
    Image.fromarray(ins['image_4']).save(tmp_path / 'img4.jpg', format='PNG')
    written = run_inference(make_stub(ins['stub_weights'], ins['stub_biases']), [str(tmp_path / 'img4.jpg')],
                            str(tmp_path / 'out'), (24, 24), (16, 16), 5, 'voc', progress=False)
    assert written[0]['gray'] == str(tmp_path / 'out' / 'gray' / 'img4.png')
    np.testing.assert_array_equal(np.asarray(Image.open(written[0]['gray'])), outs['pred_4'])
    np.testing.assert_array_equal(np.asarray(Image.open(written[0]['color'])), colorize(outs['pred_4'], 'voc'))


def test_run_inference_msc_reproduces_the_original_files(golden, tmp_path):
    ins, outs, case = golden('aaf_msc_flip_inference')
    paths = []
    for i in (0, 1):
        Image.fromarray(ins[f'image_{i}']).save(tmp_path / f'im{i}.png')
        paths.append(str(tmp_path / f'im{i}.png'))
    written = run_inference(make_stub(ins['stub_weights'], ins['stub_biases']), paths, str(tmp_path / 'out'),
                            (24, 24), (16, 16), 4, 'voc', msc=True, flip_aug=True, scale_aug=True,
                            save_probabilities=True, progress=False)
    for i in (0, 1):
        np.testing.assert_array_equal(np.asarray(Image.open(written[i]['gray'])), outs[f'pred_{i}'])
        np.testing.assert_allclose(np.load(written[i]['prob']), outs[f'fused_scores_{i}'], rtol=1e-6, atol=5e-4)


def test_truncated_jpeg_with_valid_header_names_the_path(tmp_path):
    """aaf.inference / inference_msc read images through load_image: a JPEG cut short is refused by name."""
    path = tmp_path / 'cut.jpg'
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    content = path.read_bytes()
    path.write_bytes(content[:len(content) // 2])
    with pytest.raises(ValueError, match=r'cannot decode image .*cut\.jpg'):
        load_image(str(path))
