"""Unsupervised SegSort training (`train_segsort_unsup.py`): the loss sorts pixels into the over-segmentation
(HED-owt-ucm in the original; `segsort.overseg` writes scikit-image substitutes) without semantic labels.

    python -m segsort.train_unsup --data_dir VOCdevkit/ --data_list dataset/voc12/train+.txt \
        --restore_from resnet_v1_101.ckpt --not_restore_classifier --is_training --random_mirror --random_scale \
        --random_crop --batch_size 8 --input_size 336,336 --learning_rate 2e-3 --num_steps 10001 \
        --save_pred_every 10000 --update_tb_every 50 --iter_size 1 --embedding_dim 32 --concentration 10 \
        --snapshot_dir snapshots/unsup_segsort

Over-segmentations are read from `label.replace('segcls', 'hed')` (the original, Q-S2: SBD label paths contain no
'segcls', so those images would train on their GT masks); `--hed_dir DIR` reads `DIR/<label file name>` for every
line instead. Everything else as `segsort.train`.
"""
from segsort.train import run as _run


def run():
    """Console script `segsort-train-unsup`."""
    _run(unsupervised=True)


if __name__ == '__main__':
    run()
