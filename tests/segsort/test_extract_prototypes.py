"""segsort.extract_prototypes: prototype files (writing, reading, bad files) and the location features (Q-S4)."""
import numpy as np
import pytest

from segsort import extract_prototypes as ep


def test_save_and_load_round_trip(tmp_path):
    feats = np.random.default_rng(0).normal(size=[5, 8]).astype(np.float32)
    paths = ep.save_prototypes(str(tmp_path), feats, np.arange(5))
    assert [p.split('/')[-1] for p in paths] == list(ep.PROTOTYPE_FILES)
    loaded, labels = ep.load_prototypes(str(tmp_path / 'prototypes'), embedding_dim=8)
    np.testing.assert_array_equal(loaded, feats)
    assert labels.dtype == np.int32 and list(labels) == list(range(5))


def test_bad_prototype_files_are_named(tmp_path):
    proto_dir = tmp_path / 'prototypes'
    with pytest.raises(FileNotFoundError, match='prototype_features.npy not found'):
        ep.load_prototypes(str(proto_dir))
    ep.save_prototypes(str(tmp_path), np.zeros([0, 8], np.float32), np.zeros([0]))
    with pytest.raises(ValueError, match=r'prototype_features.npy holds no prototypes \(shape \(0, 8\)\)'):
        ep.load_prototypes(str(proto_dir))
    ep.save_prototypes(str(tmp_path), np.ones([3, 8], np.float32), np.zeros([3]))
    with pytest.raises(ValueError, match=r'--embedding_dim 32 does not match the 8-dimensional prototypes in .*'
                                         r'prototype_features.npy'):
        ep.load_prototypes(str(proto_dir), embedding_dim=32)
    np.save(proto_dir / 'prototype_labels.npy', np.zeros([2], np.int32))
    with pytest.raises(ValueError, match=r'prototype_labels.npy has shape \(2,\), expected \(3,\)'):
        ep.load_prototypes(str(proto_dir))
    (proto_dir / 'prototype_features.npy').write_bytes(b'not numpy')
    with pytest.raises(ValueError, match='cannot read'):
        ep.load_prototypes(str(proto_dir))


def test_location_features_reproduce_the_padded_canvas_misalignment():
    # Image 3x4 in a 5x5 window: the original gathers the first 12 rows of the 5x5 canvas grid (Q-S4).
    canvas = np.stack(np.meshgrid(np.linspace(0, 1, 5), np.linspace(0, 1, 5))[::-1], -1).reshape(-1, 2)
    np.testing.assert_allclose(ep.location_features((3, 4), (5, 5)), canvas[:12], rtol=1e-6)
    fixed = ep.location_features((3, 4), (5, 5), fix=True).reshape(3, 4, 2)
    np.testing.assert_allclose(fixed[:, :, 0], np.repeat(np.linspace(0, 1, 3)[:, None], 4, 1), rtol=1e-6)
    np.testing.assert_allclose(fixed[:, :, 1], np.repeat(np.linspace(0, 1, 4)[None], 3, 0), rtol=1e-6)


def test_image_prototypes_label_clusters_by_majority():
    # Left half class 1, right half class 2, embeddings pointing two ways: two pure prototypes per class side.
    emb = np.zeros([6, 8, 4], np.float32)
    emb[:, :4, 0], emb[:, 4:, 1] = 1.0, 1.0
    label = np.ones([6, 8], np.int32)
    label[:, 4:] = 2
    label[0, 0] = 255
    feats, labels = ep.image_prototypes(emb, label, 2, 5, input_size=(6, 8))
    assert set(labels) == {1, 2}
    for f, lab in zip(feats, labels):
        np.testing.assert_allclose(f, np.eye(4)[lab - 1], atol=1e-6)
