"""One random draw per weight: initializers cloned before each use."""

from __future__ import annotations

import keras


def clone_initializer(initializer):
    """A fresh copy of `initializer`, for one weight.

    A Keras 3 initializer object fixes its seed when it is made and draws the same values on
    every call, so an instance handed to several weights would give them identical values.
    Every weight (as TF1's `get_variable` did) takes a clone instead, as KerasHub's
    `clone_initializer` does. An initializer made without a seed draws a new seed when cloned,
    from Keras' global generator (`keras.utils.set_random_seed`), so a seeded model is still
    the same model every time; one with an explicit integer seed keeps it.

    Args:
        initializer: A `keras.initializers.Initializer`, or anything `keras.initializers.get`
            takes (a name or a config), or a plain callable (returned as it is).

    Returns:
        A new initializer of the same class and configuration.
    """
    if isinstance(initializer, (str, dict)):
        return keras.initializers.get(initializer)
    if not isinstance(initializer, keras.initializers.Initializer):
        return initializer
    return initializer.__class__.from_config(initializer.get_config())
