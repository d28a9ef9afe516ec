"""A2GNN's gated affinity head (`network/resnet38_aff_gated.py`): the per-pixel affinity to every neighbour of a
square window, from the mean absolute difference of the f9 features."""
import tensorflow as tf

from a2gnn.ops import shifted_windows
from affinitynet.model import AffinityNet, build_backbone


def gated_affinity(f9, radius):
    """Affinities of the gated head for one radius.

    Args:
      f9: [N, H, W, C] float features (ELU output of the f9 conv).
      radius: window radius r (square (2r+1)^2 window, centre included).
    Returns:
      (aff, aff_crf), each [N, H, W, 2r+1, 2r+1]: aff_crf[n,i,j,ky,kx] = mean_c |f[i+ky-r, j+kx-r, c] - f[i,j,c]|
      with zero features out of bounds (the original's zero-padded unfold), aff = exp(-aff_crf).
    """
    f9 = tf.convert_to_tensor(f9, tf.float32)
    diameter = 2 * radius + 1
    # One offset at a time: the unfolded [N, H, W, C, d, d] tensor would be d^2 times the feature map.
    distances = [tf.reduce_mean(tf.abs(neighbour - f9), axis=-1) for neighbour in shifted_windows(f9, radius)]
    aff_crf = tf.stack(distances, axis=-1)
    aff_crf = tf.reshape(aff_crf, tf.concat([tf.shape(aff_crf)[:3], [diameter, diameter]], axis=0))
    return tf.exp(-aff_crf), aff_crf


class GatedAffinityNet(AffinityNet):
    """`network/resnet38_aff_gated.Net`: PSA's ResNet-38 affinity trunk and f8_3/f8_4/f8_5/f9 head (same
    parameter names, so A2GNN's `.pth` files load by name), with the gated square-window affinity instead of
    PSA's pair affinity.

    Call: net(images, radius=4, training=False) -> (features [N, h, w, C4+C5+C6] (conv4/5/6 concatenated: the
    GNN's node features), aff, aff_crf [N, h, w, 2r+1, 2r+1]).
    """

    def head_features(self, endpoints):
        parts = [tf.nn.elu(conv(tf.convert_to_tensor(endpoints[name], tf.float32)))
                 for conv, name in zip(self.f8, self.endpoint_names)]
        return tf.nn.elu(self.f9(tf.concat(parts, axis=-1)))

    def call(self, images, radius=4, training=False):
        endpoints = self.backbone(images, training=training)
        features = tf.concat([endpoints[name] for name in self.endpoint_names], axis=-1)
        aff, aff_crf = gated_affinity(self.head_features(endpoints), radius)
        return features, aff, aff_crf


def build_gated_affinity_net(width_multiplier=1.0, widths=None, from_scratch=False, seed=0):
    """A `GatedAffinityNet` on a (possibly reduced) ResNet-38 (frozen: conv1a, b2, b2_1, b2_2). from_scratch:
    AffinityNet's initialisation for training without pretrained weights (see affinitynet.model.build_backbone),
    drawn reproducibly from `seed` (None: affinitynet's per-process initializer)."""
    backbone = build_backbone('resnet38', 'aff', width_multiplier, widths, from_scratch=from_scratch,
                              scratch_seed=seed if from_scratch else None)
    return GatedAffinityNet(backbone, 'resnet38', name='resnet38_aff_gated')
