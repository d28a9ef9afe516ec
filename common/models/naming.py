"""Original (TF1 / TF-Slim / PyTorch) names of our Keras variables.

Checkpoint loaders, LR-multiplier groups ('block5' -> x10) and the L2 rule ('weights' in the name) all select
variables by the names the originals gave them. Keras 3 forbids '/' in layer names, so builders record the
original name of every variable they create here; a variable without a record falls back to its Keras path.
"""

import itertools
import weakref

# id(variable) -> (weak reference to the variable, name, record index). Weak, so that recording a name never keeps
# a model alive (tests build hundreds of models in one process); a dead entry is dropped by the reference's callback.
_ORIGINAL_NAMES = {}
_RECORD_COUNTER = itertools.count()


def _entry(variable):
    entry = _ORIGINAL_NAMES.get(id(variable))
    if entry is not None and entry[0]() is variable:
        return entry
    return None


def set_original_name(variable, name):
    """Records the original name (without ':0') of a Keras variable (and when it was recorded, see
    `in_original_order`)."""
    key = id(variable)

    def forget(ref, key=key):
        current = _ORIGINAL_NAMES.get(key)
        if current is not None and current[0] is ref:
            del _ORIGINAL_NAMES[key]

    _ORIGINAL_NAMES[key] = (weakref.ref(variable, forget), name, next(_RECORD_COUNTER))


def original_name(variable):
    """The original name of a variable: the recorded one, else its Keras `path` (else `name`)."""
    entry = _entry(variable)
    if entry is not None:
        return entry[1]
    return getattr(variable, 'path', None) or variable.name.split(':')[0]


def original_names(variables):
    """Maps original name -> variable for a list of variables; raises on duplicates."""
    out = {}
    for v in variables:
        name = original_name(v)
        if name in out:
            raise ValueError(f'two variables share the original name {name!r}')
        out[name] = v
    return out


def in_original_order(variables):
    """The variables sorted by the order their original names were recorded (= creation order of the TF1 graph,
    e.g. a bottleneck's `shortcut` before its `conv1`); Keras' `model.variables` is ordered by graph depth instead.
    Variables without a record keep their relative order, after the recorded ones."""
    variables = list(variables)

    def key(item):
        index, v = item
        entry = _entry(v)
        if entry is not None:
            return (0, entry[2])
        return (1, index)
    return [v for _, v in sorted(enumerate(variables), key=key)]
