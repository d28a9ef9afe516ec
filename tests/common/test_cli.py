from common.cli import normalize_flag_names


def test_hyphens_become_underscores_in_names_only():
    argv = ['prog', '--batch-size=8', '--data-dir', '/a-b/', '--random-mirror', '-v', '--', '--keep-me']
    assert normalize_flag_names(argv) == [
        'prog', '--batch_size=8', '--data_dir', '/a-b/', '--random_mirror', '-v', '--', '--keep-me']


def test_values_with_equals_and_hyphens_are_untouched():
    assert normalize_flag_names(['p', '--string-replace=leftImg8bit,gtFine-x']) == [
        'p', '--string_replace=leftImg8bit,gtFine-x']
