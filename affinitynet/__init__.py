"""AffinityNet / PSA (CVPR 2018, jiwoon-ahn/psa) on TF2 / Keras 3."""
import os

# oneDNN's CPU kernels crash (segfault, or abort on a double free) in the first graph-mode (tf.function) gradient
# step of the reduced ResNet-38 with the original frozen BN trained from scratch (width 1/8 at 112 px, 1/16 at
# 64 px, batch 8; reproduced on TF 2.21). The same step runs eagerly, with the plain Eigen kernels, and with
# batch norm trained (--bn_decay); turning off grappler's remapper does not help. Only effective when set before
# TensorFlow is imported (the command-line programs import this package first).
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
