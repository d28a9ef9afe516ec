import os

import numpy as np
import pytest
from PIL import Image

from common.io import atomic_write, atomic_write_text, remove_stale_temp_files, save_png


def test_save_png_modes_round_trip(tmp_path):
    labels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    palette = np.zeros((256, 3), np.uint8)
    palette[5] = (1, 2, 3)
    save_png(str(tmp_path / 'l.png'), labels, 'L')
    save_png(str(tmp_path / 'p.png'), labels, 'P', palette)
    save_png(str(tmp_path / 'rgb.png'), np.stack([labels] * 3, -1), 'RGB')
    assert Image.open(tmp_path / 'l.png').mode == 'L'
    p = Image.open(tmp_path / 'p.png')
    assert p.mode == 'P' and tuple(p.getpalette()[15:18]) == (1, 2, 3)
    np.testing.assert_array_equal(np.asarray(p), labels)  # raw indices, not luminance
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / 'rgb.png'))[..., 1], labels)
    with pytest.raises(ValueError, match='cannot be written as mode'):
        save_png(str(tmp_path / 'bad.png'), np.zeros((2, 2, 3), np.uint8), 'L')


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = str(tmp_path / 'sub' / 'config')
    atomic_write_text(path, 'old')
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o644)

    def fail(handle):
        handle.write(b'partial')
        raise RuntimeError('interrupted')

    with pytest.raises(RuntimeError):
        atomic_write(path, fail)
    assert open(path).read() == 'old'
    assert os.listdir(tmp_path / 'sub') == ['config']


def test_remove_stale_temp_files_removes_only_temporaries(tmp_path):
    atomic_write_text(str(tmp_path / 'done.txt'), 'complete')
    (tmp_path / '.tmp_half.png.x1y2').write_bytes(b'\x89PNG partial')  # what a SIGKILL mid-write leaves
    (tmp_path / 'tmp_not_ours.txt').write_text('kept')
    assert remove_stale_temp_files(str(tmp_path)) == 1
    assert sorted(os.listdir(tmp_path)) == ['done.txt', 'tmp_not_ours.txt']
    assert remove_stale_temp_files(str(tmp_path / 'missing')) == 0
