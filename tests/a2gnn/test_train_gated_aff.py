import numpy as np

from a2gnn.cli import build_net
from a2gnn.train_gated_aff import train_gated_affinity
from common.data.lists import load_img_name_list


def test_gated_affinity_training_lowers_the_loss(synthetic_voc):
    """A few poly-SGD steps on the seeds of a tiny synthetic set lower the gated affinity loss."""
    names = load_img_name_list(f'{synthetic_voc}/voc12/train_aug.txt')[:4]
    net = build_net('', 0.0625)
    losses = train_gated_affinity(net, names, f'{synthetic_voc}/VOCdevkit/VOC2012',
                                  f'{synthetic_voc}/data/Init_Label/SEAM_Image', crop_size=64, batch_size=2,
                                  max_epoches=4, lr=0.01, radius=3, progress=False)
    assert len(losses) == 8 and np.all(np.isfinite(losses))
    assert np.mean(losses[-2:]) < np.mean(losses[:2])
