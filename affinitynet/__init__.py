"""AffinityNet / PSA (CVPR 2018, jiwoon-ahn/psa) on TF2 / Keras 3."""
import os

# oneDNN's CPU kernels crashed (segfault / double free) in backward passes of the reduced ResNet-38 trained from
# scratch; the plain Eigen kernels do not. Only effective when set before TensorFlow is imported.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
