import re
import subprocess
import sys

import pytest


@pytest.mark.slow
@pytest.mark.xfail(reason='the image-level quick start does not yet beat its seeds (README, A2GNN section)',
                   strict=False)
def test_quickstart_pseudo_labels_beat_the_seeds(tmp_path):
    """The synthetic box and image-level pipelines (reduced trunk trained from scratch on the seeds): the
    image-level run's pseudo labels score a higher mIoU than its seeds (unlabelled seed pixels as background)."""
    result = subprocess.run([sys.executable, '-m', 'a2gnn.quickstart', f'--out={tmp_path}', '--box_epochs=20'],
                            check=True, capture_output=True, text=True, timeout=1500)
    last = result.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r'quickstart mIoU: seeds ([\d.]+) a2gnn ([\d.]+)', last)
    assert match, last
    assert float(match.group(2)) > float(match.group(1))
    assert (tmp_path / 'report.md').exists() and (tmp_path / 'report.png').exists()
