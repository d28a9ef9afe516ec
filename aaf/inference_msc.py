"""AAF multi-scale + flip inference (the original `inference_msc.py`); flags as `aaf.inference` plus
`--flip-aug` and `--scale-aug`.

    python -m aaf.inference_msc --flip-aug --scale-aug --data-dir VOCdevkit/ --data-list dataset/voc12/val.txt \
        --input-size 480,480 --strides 320,320 --restore-from stage2/model.ckpt-30000 --save-dir stage2/results/val
"""
from aaf import inference


def run():
    """Console script `aaf-inference-msc`."""
    inference.run(msc=True)


if __name__ == '__main__':
    run()
