"""SegSort's embedding network: a `common.models` segmentation builder whose classifier is the embedding layer.

The original builds PSPNet with `num_classes = embedding_dim`: the raw (unnormalised) embedding is
`resnet_v1_101/block5/fc1_voc12` (10x learning rate, re-initialised by --not_restore_classifier). Keeping the
builder keeps the original variable names, so TF1 SegSort checkpoints restore. Normalisation happens in the losses
and at inference.
"""
from absl import flags, logging

from common.models.factory import define_model_flags, model_from_flags
from common.train.checkpoints import restore_variables


def define_embedding_flags(flag_values, kmeans=True):
    """--embedding_dim and (kmeans=True) --num_clusters / --kmeans_iterations, plus the model flags."""
    fv = dict(flag_values=flag_values)
    flags.DEFINE_integer('embedding_dim', 32, 'Dimension of the embedding (channels of block5/fc1_voc12).', **fv)
    if kmeans:
        flags.DEFINE_integer('num_clusters', 5, 'Initial k-means grid per axis (5 -> 25 clusters per image).', **fv)
        flags.DEFINE_integer('kmeans_iterations', 10, 'vMF k-means iterations.', **fv)
    define_model_flags(flag_values)


def build_embedding_model(cfg, input_size, training, **kwargs):
    """The embedding network of the flags (`--model`, `--backbone_*`, `--embedding_dim`).

    Returns:
      keras.Model images [N, H, W, 3] -> raw embedding [N, H/8, W/8, embedding_dim].
    """
    if cfg.embedding_dim < 1:
        raise ValueError(f'--embedding_dim must be >= 1, got {cfg.embedding_dim}')
    return model_from_flags(cfg, cfg.embedding_dim, input_size, training=training, **kwargs)


def load_embedding_model(cfg, input_size):
    """Inference graph (moving BN statistics) restored from `--restore_from` by original names."""
    if not cfg.restore_from:
        raise ValueError('--restore_from is required (a checkpoint prefix or a snapshot directory)')
    model = build_embedding_model(cfg, input_size, training=False)
    restored, missing, _ = restore_variables(model.variables, cfg.restore_from, model=model)
    if missing:
        raise ValueError(f'--restore_from {cfg.restore_from}: {len(missing)} of the model\'s variables are not in '
                         f'the checkpoint (e.g. {missing[:3]}); check --model / --backbone_* / --psp_channels / '
                         f'--embedding_dim')
    logging.info('restored %d variables from %s', len(restored), cfg.restore_from)
    return model
