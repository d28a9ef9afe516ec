"""Adaptive Affinity Fields (ECCV'18): losses (`aaf.losses`) and the train / inference / benchmark CLIs."""
