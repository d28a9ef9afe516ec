"""The training engine shared by the method CLIs (contract: `common.train.engine` module docstring).

strategy.py     make_strategy: one device / MirroredStrategy / MultiWorkerMirrored / TPU from flags
optimizers.py   TF1Momentum, TorchSGD, TorchAdam with the originals' update rules; VariableGroup (LR multipliers,
                gradient ascent), aaf_variable_groups, psa_parameter_groups, poly_optimizer
schedules.py    poly_lr (AAF / PSA forms), affinity_decay
regularizers.py l2_loss (weight_decay * sum(v^2)/2 over 'weights' variables)
checkpoints.py  name-keyed checkpoints, partial restore with exclude scopes, config files
summaries.py    TensorBoard scalars / images (no tensorboard package needed), progress text
engine.py       TrainConfig, Trainer, train, NonFiniteLossError
"""
from common.train.engine import NonFiniteLossError, TrainConfig, Trainer, train
from common.train.optimizers import (TF1Momentum, TorchAdam, TorchSGD, VariableGroup, aaf_variable_groups,
                                     make_optimizer, poly_optimizer, psa_parameter_groups)
from common.train.regularizers import l2_loss
from common.train.schedules import affinity_decay, poly_lr
from common.train.strategy import make_strategy, strategy_from_flags

__all__ = [
    'NonFiniteLossError', 'TrainConfig', 'Trainer', 'train', 'TF1Momentum', 'TorchAdam', 'TorchSGD',
    'VariableGroup', 'aaf_variable_groups', 'make_optimizer', 'poly_optimizer', 'psa_parameter_groups', 'l2_loss',
    'affinity_decay', 'poly_lr', 'make_strategy', 'strategy_from_flags',
]
