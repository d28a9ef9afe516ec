"""Multi-scale + flip SegSort inference (`inference_segsort_msc.py`, aaf_segsort.md 7.7).

    python -m segsort.inference_msc --data_dir VOCdevkit/ --data_list dataset/voc12/val.txt --input_size 480,480 \
        --strides 320,320 --restore_from stage2/model.ckpt-30000 --prototype_dir stage2/results/train/prototypes \
        --k_in_nearest_neighbors 15 --flip_aug --scale_aug --save_dir stage2/results/val

Every 480x480 window of every scale/flip is clustered on its own 5x5 grid with (y/480, x/480) locations; each pixel
receives k votes (its cluster's nearest training prototypes' labels); votes are resized (OpenCV bilinear), un-flipped
and summed over the passes; the argmax is the prediction. Flags as `segsort.inference` plus --flip_aug/--scale_aug.
"""
from segsort.inference import run as _run


def run():
    """Console script `segsort-inference-msc`."""
    _run(msc=True)


if __name__ == '__main__':
    run()
