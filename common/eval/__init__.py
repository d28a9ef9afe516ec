"""Evaluation: split-level mIoU and instance-wise mIoU of the originals' benchmarks (`metrics`), the benchmark CLI
over prediction/ground-truth directories (`benchmark.evaluate_dirs`, `python -m common.eval.benchmark`) and the
Cityscapes trainId -> labelId encoder (`cityscapes`, `python -m common.eval.cityscapes`).
"""
from common.eval.metrics import (InstanceSegmentationMetric, SegmentationMetric, accuracy, confusion_matrix,
                                 iou_stats)

__all__ = ['InstanceSegmentationMetric', 'SegmentationMetric', 'accuracy', 'confusion_matrix', 'iou_stats']
