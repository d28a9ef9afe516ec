"""AAF benchmarks: `benchmark_by_mIoU.py` and, with `--inst-dir`, `benchmark_by_instance.py`.

    python -m aaf.benchmark --pred-dir stage1/results/val/gray/ --gt-dir VOCdevkit/VOC2012/segcls/ --num-classes 21

The implementation is shared with the other methods (`common.eval.benchmark`); this module keeps the AAF entry
point and console script (`aaf-benchmark`).
"""
from common.eval.benchmark import run

if __name__ == '__main__':
    run()
