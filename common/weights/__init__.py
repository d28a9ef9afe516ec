"""Weight loaders/converters.

`common.weights.slim.load_slim_checkpoint(model, ckpt_path, exclude_scopes=())` restores TF1 / TF-Slim checkpoints
by original variable name (see `common.models.naming`). PyTorch converters live in `common.weights.torch_convert`.
"""
