"""Cityscapes test submission: trainId predictions -> labelId PNGs (the original `encode_cityscapes_testid.py`).

    python -m aaf.encode_cityscapes_testid --pred-dir results/test/gray/ --save-dir results/test/labelIds/

Shared implementation: `common.eval.cityscapes`.
"""
from common.eval.cityscapes import run

if __name__ == '__main__':
    run()
