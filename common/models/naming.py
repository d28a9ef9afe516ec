"""Original (TF1 / TF-Slim / PyTorch) names of our Keras variables.

Checkpoint loaders, LR-multiplier groups ('block5' -> x10) and the L2 rule ('weights' in the name) all select
variables by the names the originals gave them. Keras 3 forbids '/' in layer names, so builders record the
original name of every variable they create here; a variable without a record falls back to its Keras path.
"""

_ORIGINAL_NAMES = {}


def set_original_name(variable, name):
    """Records the original name (without ':0') of a Keras variable."""
    _ORIGINAL_NAMES[id(variable)] = (variable, name)


def original_name(variable):
    """The original name of a variable: the recorded one, else its Keras `path` (else `name`)."""
    entry = _ORIGINAL_NAMES.get(id(variable))
    if entry is not None and entry[0] is variable:
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
