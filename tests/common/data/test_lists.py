"""List-file readers: the originals' parsing rules and clear errors."""
import pytest

from common.data.lists import (EmptyListError, load_img_name_list, read_labeled_image_list,
                               read_unsup_labeled_image_list, write_image_list)


def test_read_labeled_image_list_concatenates_and_handles_test_lines(tmp_path):
    lst = tmp_path / 'l.txt'
    lst.write_text('VOC2012/JPEGImages/a.jpg VOC2012/segcls/a.png\nVOC2012-test/JPEGImages/b.jpg\n')
    images, masks = read_labeled_image_list('/root/', str(lst))
    assert images == ['/root/VOC2012/JPEGImages/a.jpg', '/root/VOC2012-test/JPEGImages/b.jpg']
    assert masks == ['/root/VOC2012/segcls/a.png', '/root/VOC2012-test/JPEGImages/b.jpg']
    # Plain concatenation: no separator is inserted (the originals need data_dir's trailing '/').
    assert read_labeled_image_list('/root', str(lst))[0][0] == '/rootVOC2012/JPEGImages/a.jpg'


def test_three_token_line_is_used_whole_like_the_original(tmp_path):
    lst = tmp_path / 'l.txt'
    lst.write_text('a.jpg b.png c.png\n')
    images, masks = read_labeled_image_list('', str(lst))
    assert images == masks == ['a.jpg b.png c.png']


def test_unsup_hed_path_replaces_segcls_only(tmp_path):
    lst = tmp_path / 'l.txt'
    lst.write_text('VOC2012/JPEGImages/a.jpg VOC2012/segcls/a.png\nVOC2012/JPEGImages/b.jpg sbd/dataset/clsimg/b.png\n')
    images, masks, segs = read_unsup_labeled_image_list('/d/', str(lst))
    assert segs == ['/d/VOC2012/hed/a.png', '/d/sbd/dataset/clsimg/b.png']  # Q-S2: SBD lines unchanged
    assert masks[1] == '/d/sbd/dataset/clsimg/b.png' and len(images) == 2


def test_load_img_name_list_cuts_voc_ids(tmp_path):
    lst = tmp_path / 'train_aug.txt'
    lst.write_text('/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png\n'
                   '/JPEGImages/2011_003276.jpg\n')
    assert load_img_name_list(str(lst)) == ['2007_000032', '2011_003276']


@pytest.mark.parametrize('reader', [read_labeled_image_list, read_unsup_labeled_image_list])
def test_empty_list_file_error_names_file(tmp_path, reader):
    lst = tmp_path / 'empty_list.txt'
    lst.write_text('\n')
    with pytest.raises(EmptyListError, match='empty_list.txt is empty'):
        reader('', str(lst))


def test_missing_list_file_error_names_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.txt'):
        load_img_name_list(str(tmp_path / 'nope.txt'))


def test_write_image_list_roundtrip(tmp_path):
    out = tmp_path / 'sub' / 'out.txt'
    assert write_image_list(str(out), [('x.jpg', 'y.png'), 'z.jpg']) == 2
    assert out.read_text() == 'x.jpg y.png\nz.jpg\n'
    assert read_labeled_image_list('', str(out)) == (['x.jpg', 'z.jpg'], ['y.png', 'z.jpg'])


def test_write_pseudo_label_list(tmp_path):
    from common.data.lists import read_labeled_image_list, write_pseudo_label_list
    import pytest as _pytest
    (tmp_path / 'VOC' / 'JPEGImages').mkdir(parents=True)
    (tmp_path / 'rw').mkdir()
    for name in ('a', 'b'):
        (tmp_path / 'VOC' / 'JPEGImages' / f'{name}.jpg').write_bytes(b'x')
        (tmp_path / 'rw' / f'{name}.png').write_bytes(b'x')
    out = tmp_path / 'list.txt'
    data_dir = str(tmp_path) + '/'
    assert write_pseudo_label_list(str(out), ['a', 'b'], str(tmp_path / 'VOC'), str(tmp_path / 'rw'), data_dir) == 2
    assert out.read_text().splitlines()[0] == 'VOC/JPEGImages/a.jpg rw/a.png'
    images, labels = read_labeled_image_list(data_dir, str(out))
    assert images[1] == data_dir + 'VOC/JPEGImages/b.jpg' and labels[1] == data_dir + 'rw/b.png'
    with _pytest.raises(FileNotFoundError, match='pseudo label of c'):
        (tmp_path / 'VOC' / 'JPEGImages' / 'c.jpg').write_bytes(b'x')
        write_pseudo_label_list(str(out), ['c'], str(tmp_path / 'VOC'), str(tmp_path / 'rw'))
