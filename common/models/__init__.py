"""Segmentation networks with the originals' semantics (Keras 3, channels-last).

Public builders (imported lazily so `common.models.naming` stays importable without TensorFlow):
  build_resnet_v1, resnet_v1_50, resnet_v1_101, resnet_v1_152   (common.models.resnet_v1)
  build_pspnet, pspnet_resnet101                                 (common.models.pspnet)
  build_deeplab, deeplab_resnet101                               (common.models.deeplab)
  build_fcn, fcn8s_resnet101                                     (common.models.fcn)
  BatchNormTF1, Conv2DTF1, resize_bilinear_legacy                (common.models.layers)
  original_name, set_original_name, original_names               (common.models.naming)
"""
import importlib

_EXPORTS = {
    'build_resnet_v1': 'resnet_v1', 'resnet_v1_50': 'resnet_v1', 'resnet_v1_101': 'resnet_v1',
    'resnet_v1_152': 'resnet_v1',
    'build_pspnet': 'pspnet', 'pspnet_resnet101': 'pspnet',
    'build_deeplab': 'deeplab', 'deeplab_resnet101': 'deeplab',
    'build_fcn': 'fcn', 'fcn8s_resnet101': 'fcn',
    'BatchNormTF1': 'layers', 'Conv2DTF1': 'layers', 'resize_bilinear_legacy': 'layers',
    'original_name': 'naming', 'set_original_name': 'naming', 'original_names': 'naming',
}


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    return getattr(importlib.import_module(f'{__name__}.{module}'), name)


__all__ = sorted(_EXPORTS)
