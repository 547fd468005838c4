"""What every layer of this package does for its sublayers and weights."""

import keras


def clone_initializer(initializer):
    """A new initializer with `initializer`'s configuration, for one weight or sublayer.

    An unseeded Keras initializer instance draws its seed once, when it is made, and returns
    the same values at every call; sharing one instance between the query, key and value
    kernels would start them equal. keras-hub's `clone_initializer` and
    `keras.layers.MultiHeadAttention` clone for the same reason. Strings and configs give a
    fresh instance anyway.
    """
    if not isinstance(initializer, keras.initializers.Initializer):
        return keras.initializers.get(initializer)
    return initializer.__class__.from_config(initializer.get_config())
