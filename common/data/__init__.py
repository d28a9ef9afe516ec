"""Data: list files, data-set layouts, the AAF/SegSort readers and tf.data pipelines.

The original reader functions keep their names (channels-last, one image at a time).
"""
from common.data.aaf_reader import (IMG_MEAN, crop_and_pad_image_and_labels, image_mirroring, image_scaling,
                                    read_images_from_disk, read_images_from_disk_for_segsort,
                                    read_images_from_disk_for_unsup_segsort, shrink_labels)
from common.data.lists import load_img_name_list, read_labeled_image_list, read_unsup_labeled_image_list
from common.data.pipeline import build_inference_dataset, build_segmentation_dataset

__all__ = [
    'IMG_MEAN', 'crop_and_pad_image_and_labels', 'image_mirroring', 'image_scaling', 'read_images_from_disk',
    'read_images_from_disk_for_segsort', 'read_images_from_disk_for_unsup_segsort', 'shrink_labels',
    'load_img_name_list', 'read_labeled_image_list', 'read_unsup_labeled_image_list',
    'build_segmentation_dataset', 'build_inference_dataset',
]
