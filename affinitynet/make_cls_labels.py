"""`cls_labels.npy` from VOC XML annotations (PSA `voc12/make_cls_labels.py`); the implementation is
`common.data.cls_labels` (A2GNN uses the same file).

    python -m affinitynet.make_cls_labels --voc12_root VOC2012 --train_list voc12/train_aug.txt \\
        --val_list voc12/val.txt --out voc12/cls_labels.npy
"""
from common.data.cls_labels import main, run  # noqa: F401  (the CLI)

if __name__ == '__main__':
    run()
