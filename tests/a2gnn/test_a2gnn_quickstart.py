import os
import re
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_quickstart_pseudo_labels_beat_the_seeds(tmp_path):
    """The synthetic box and image-level pipelines (reduced trunk trained from scratch on the seeds, fixed seeds,
    reproducible runs): on both, the pseudo labels score a higher mIoU than the seeds (all pixels, unlabelled seed
    pixels as background). Small run: 6 images of 128x128 (16x16 nodes), few epochs."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
    result = subprocess.run([sys.executable, '-m', 'a2gnn.quickstart', f'--out={tmp_path}', '--num_images=6',
                             '--size=128', '--aff_epochs=4', '--box_epochs=40', '--image_epochs=50'],
                            check=True, capture_output=True, text=True, timeout=600, env=env)
    lines = result.stdout.strip().splitlines()
    per_mode = {m.group(1): (float(m.group(2)), float(m.group(3)))
                for m in (re.match(r'(box|image): seeds ([\d.]+) a2gnn ([\d.]+)', line) for line in lines) if m}
    assert set(per_mode) == {'box', 'image'}, result.stdout
    assert per_mode['image'][1] > per_mode['image'][0], per_mode
    assert per_mode['box'][1] > per_mode['box'][0], per_mode
    last = re.fullmatch(r'quickstart mIoU: seeds ([\d.]+) a2gnn ([\d.]+)', lines[-1])
    assert last, lines[-1]
    assert (float(last.group(1)), float(last.group(2))) == per_mode['image']
    assert (tmp_path / 'report.md').exists() and (tmp_path / 'report.png').exists()
