"""common.colormap: the originals' `--colormap misc/colormap*.mat` values, real .mat files, bad names."""
import numpy as np
import pytest
import scipy.io

from common import colormap


def test_voc_colormap_is_the_pascal_bit_interleaved_palette():
    cmap = colormap.voc_colormap()
    assert cmap.shape == (256, 3) and cmap.dtype == np.uint8
    assert cmap[0].tolist() == [0, 0, 0] and cmap[1].tolist() == [128, 0, 0] and cmap[15].tolist() == [192, 128, 128]
    assert cmap[255].tolist() == [224, 224, 192]


@pytest.mark.parametrize('value, builtin', [('misc/colormapvoc.mat', 'voc'), ('misc/colormapcs.mat', 'cityscapes'),
                                            ('/elsewhere/colormapcs.mat', 'cityscapes')])
def test_original_mat_flag_values_are_aliases(value, builtin, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no misc/ folder here
    np.testing.assert_array_equal(colormap.get_colormap(value), colormap.get_colormap(builtin))
    assert not np.array_equal(colormap.get_colormap('voc'), colormap.get_colormap('cityscapes'))


def test_existing_mat_file_is_read(tmp_path):
    table = np.linspace(0, 1, 256 * 3).reshape(256, 3)
    path = tmp_path / 'colormapvoc.mat'
    scipy.io.savemat(path, {'colormapvoc': table})
    np.testing.assert_array_equal(colormap.get_colormap(str(path)), (table * 255).astype(np.uint8))


def test_unknown_names_are_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='--colormap: no such file'):
        colormap.get_colormap(str(tmp_path / 'mine.mat'))
    with pytest.raises(ValueError, match="--colormap: unknown colour map 'viridis'"):
        colormap.get_colormap('viridis')
