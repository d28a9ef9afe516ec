"""Original-name registry: lookup, fallback, duplicates and TF1 creation order."""
import keras
import pytest

from common.models.naming import in_original_order, original_name, original_names, set_original_name


def test_registry_order_and_fallback():
    a = keras.Variable(1.0, name='a')
    b = keras.Variable(2.0, name='b')
    c = keras.Variable(3.0, name='c')
    set_original_name(b, 'net/first/weights')
    set_original_name(a, 'net/second/weights')
    assert original_name(a) == 'net/second/weights'
    assert original_name(c) == c.path  # no record: Keras path
    assert in_original_order([a, c, b]) == [b, a, c]
    assert set(original_names([a, b, c])) == {'net/first/weights', 'net/second/weights', c.path}
    set_original_name(c, 'net/first/weights')
    with pytest.raises(ValueError, match='net/first/weights'):
        original_names([a, b, c])


def test_recording_a_name_does_not_keep_the_variable_alive():
    import gc
    import weakref
    import keras
    from common.models import naming
    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    naming.set_original_name(layer.kernel, 'dense/weights')
    assert naming.original_name(layer.kernel) == 'dense/weights'
    kernel = weakref.ref(layer.kernel)
    key = id(layer.kernel)
    del layer
    gc.collect()
    assert kernel() is None
    assert key not in naming._ORIGINAL_NAMES
