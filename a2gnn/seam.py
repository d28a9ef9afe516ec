"""SEAM's network (YudeWang/SEAM `network/resnet38_SEAM.py`, which A2GNN's infer_SEAM.py imports but does not
ship): ResNet-38 + fc8 (21 classes, background at 0) and the pixel correlation module (PCM) that propagates the
normalised CAM with feature affinities. Variables carry the PyTorch names ('fc8.weight', 'f8_3.weight',
'f8_4.weight', 'f9.weight', 'b2.conv_branch2a.weight', ...), so the released `resnet38_SEAM.pth` loads with
`affinitynet.model.load_weights`."""
import keras
import tensorflow as tf

from common.models import resnet38, torch_layers


def resize_align_corners(x, size):
    """torch bilinear interpolation with align_corners=True on [N, H, W, C]."""
    return tf.raw_ops.ResizeBilinear(images=tf.convert_to_tensor(x, tf.float32), size=tf.constant(size, tf.int32),
                                     align_corners=True, half_pixel_centers=False)


def pcm(cam, features):
    """Pixel correlation module: cam [N, h, w, C], features [N, h, w, D] (already through f9) -> cam_rv
    [N, h, w, C] = cam @ A with A = ReLU(g^T g) of L2-normalised g, each column divided by its sum (+1e-5)."""
    n, h, w = (tf.shape(cam)[i] for i in range(3))
    g = tf.reshape(features, (n, h * w, -1))
    g = g / (tf.norm(g, axis=-1, keepdims=True) + 1e-5)
    aff = tf.nn.relu(tf.matmul(g, g, transpose_b=True))  # [N, hw, hw]
    aff = aff / (tf.reduce_sum(aff, axis=1, keepdims=True) + 1e-5)
    cam_rv = tf.matmul(aff, tf.reshape(cam, (n, h * w, -1)), transpose_a=True)  # (cam @ aff) transposed
    return tf.reshape(cam_rv, tf.shape(cam))


def normalize_cam(cam):
    """SEAM's CAM normalisation before the PCM: ReLU, / spatial max, background = 1 - max foreground, foreground
    channels below the per-pixel foreground maximum set to 0. cam [N, h, w, 21]."""
    cam = tf.nn.relu(cam)
    norm = tf.nn.relu(cam - 1e-5) / (tf.reduce_max(cam, axis=[1, 2], keepdims=True) + 1e-5)
    fg = norm[..., 1:]
    fg_max = tf.reduce_max(fg, axis=-1, keepdims=True)
    fg = tf.where(fg < fg_max, 0.0, fg)
    return tf.concat([1.0 - fg_max, fg], axis=-1)


class SEAMNet(keras.Model):
    """call(images, training=False) -> (cam, cam_rv), both [N, H, W, 21] at the input size (align_corners=True)."""

    def __init__(self, backbone, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        widths = [int(backbone.output[k].shape[-1]) for k in ('conv4', 'conv5', 'conv6')]
        kaiming = torch_layers.torch_kaiming_normal_initializer()
        self.dropout7 = torch_layers.Dropout2d(0.5, name='dropout7')
        self.fc8 = self._conv(21, widths[2], torch_layers.torch_xavier_uniform_initializer(1.0), 'fc8')
        self.f8_3 = self._conv(64, widths[0], kaiming, 'f8_3')
        self.f8_4 = self._conv(128, widths[1], kaiming, 'f8_4')
        self.f9 = self._conv(192, 3 + 64 + 128, torch_layers.torch_xavier_uniform_initializer(4.0), 'f9')

    @staticmethod
    def _conv(filters, in_channels, initializer, name):
        conv = torch_layers.TorchConv2D(filters, 1, use_bias=False, kernel_initializer=initializer,
                                        original_name=name, name=name)
        conv.build((None, None, None, in_channels))
        return conv

    def call(self, images, training=False):
        images = tf.convert_to_tensor(images, tf.float32)
        d = self.backbone(images, training=training)
        cam = self.fc8(self.dropout7(d['conv6'], training=training))
        height, width = int(cam.shape[1]), int(cam.shape[2])
        norm = tf.stop_gradient(normalize_cam(cam))
        f = tf.concat([resize_align_corners(images, (height, width)),
                       tf.nn.relu(self.f8_3(tf.stop_gradient(d['conv4']))),
                       tf.nn.relu(self.f8_4(tf.stop_gradient(d['conv5'])))], axis=-1)
        cam_rv = pcm(norm, self.f9(f))
        size = (int(images.shape[1]), int(images.shape[2]))
        return resize_align_corners(cam, size), resize_align_corners(cam_rv, size)


def build_seam(width_multiplier=1.0, widths=None):
    """SEAM's Net on a (possibly reduced) ResNet-38; frozen: conv1a, b2, b2_1, b2_2."""
    backbone = resnet38.build_resnet38(width_multiplier, widths, return_endpoints=('conv4', 'conv5', 'conv6'),
                                       not_training=resnet38.NOT_TRAINING['seam'])
    return SEAMNet(backbone, name='resnet38_SEAM')
