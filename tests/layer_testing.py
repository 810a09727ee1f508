"""`run_layer_test`: the checks every layer of the package gets, after KerasHub's TestCase.

KerasHub's `TestCase.run_layer_test` checks a layer's config round trip, its symbolic and
eager calls, its weight counts and one `fit` step. This one does the same for layers whose
call takes several inputs (a pair, lengths), and adds a check of the initialization: no two
weights of more than one dimension start with the same values.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tree
from keras import ops


def distinct_weights(variables: Sequence[Any]) -> list[tuple[str, str]]:
    """Pairs of multi-dimensional weights that hold exactly the same values (should be none).

    Args:
        variables: Keras variables.

    Returns:
        `(path, path)` of every pair of kernels of one shape with equal values.
    """
    kernels = [(v.path, np.asarray(v)) for v in variables if len(v.shape) >= 2]
    return [
        (a, b)
        for (a, x), (b, y) in itertools.combinations(kernels, 2)
        if x.shape == y.shape and np.array_equal(x, y)
    ]


class LayerModel(keras.Model):
    """A model of one layer whose output is, per example, the mean of each of its outputs."""

    def __init__(self, layer: keras.layers.Layer, call_kwargs: Mapping[str, Any], **kwargs):
        super().__init__(**kwargs)
        self.layer = layer
        self.call_kwargs = dict(call_kwargs)

    def call(self, inputs):
        args, tensor_kwargs = inputs
        outputs = self.layer(*args, **tensor_kwargs, **self.call_kwargs)
        means = [
            ops.mean(ops.reshape(o, (ops.shape(o)[0], -1)), axis=-1) for o in tree.flatten(outputs)
        ]
        return ops.stack(means, axis=-1)


def _shape_list(shape) -> list[tuple]:
    """A shape `(3, 4)`, or several `((3, 4), (3, 5))`, as a list of tuples."""
    if all(isinstance(d, int) or d is None for d in shape):
        return [tuple(shape)]
    return [tuple(s) for s in shape]


def _symbolic(x):
    x = np.asarray(x)
    return keras.Input(shape=x.shape[1:], batch_size=None, dtype=str(x.dtype))


def run_layer_test(
    layer_cls: type[keras.layers.Layer],
    init_kwargs: Mapping[str, Any],
    args: Sequence[Any],
    tensor_kwargs: Mapping[str, Any] | None = None,
    call_kwargs: Mapping[str, Any] | None = None,
    expected_output_shape: Any = None,
    expected_num_trainable_weights: int | None = None,
    expected_num_non_trainable_weights: int = 0,
    run_training_check: bool = True,
    extra_check: Callable[[keras.layers.Layer, Any], None] | None = None,
) -> keras.layers.Layer:
    """Runs the shared checks on one layer configuration.

    1. Config: `from_config(get_config())` gives the same config, and the layer survives Keras'
       registered serialization (`serialize_keras_object` / `deserialize_keras_object`).
    2. Eager call on numpy inputs: output shapes, finite values.
    3. Symbolic call on `keras.Input`s with an unknown batch: output shapes agree.
    4. Weight counts; no two kernels equal (each weight has its own random draw).
    5. Reproducible: with the same `keras.utils.set_random_seed`, the same weights.
    6. One `fit` step of a model around the layer gives a finite loss and moves every
       trainable kernel (biases may have no gradient: the softmax ignores a score's bias).

    Args:
        layer_cls: The layer class.
        init_kwargs: Constructor arguments.
        args: Positional call inputs (numpy arrays, or tuples of them, batch first).
        tensor_kwargs: Keyword call inputs that are tensors (lengths, masks).
        call_kwargs: Keyword call arguments that are not tensors (`return_attention=True`).
        expected_output_shape: The eager output's shape (a tuple, or a structure of tuples).
        expected_num_trainable_weights: If given, the number of trainable weights.
        expected_num_non_trainable_weights: The number of non-trainable weights.
        run_training_check: Whether to run the `fit` step.
        extra_check: Optional `(layer, eager_output)` callback for layer-specific checks.

    Returns:
        The layer of the eager call.
    """
    tensor_kwargs = dict(tensor_kwargs or {})
    call_kwargs = dict(call_kwargs or {})

    # 1. Config round trip, plain and through Keras' registry.
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    clone = layer_cls.from_config(config)
    assert clone.get_config() == config
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(revived) is layer_cls
    assert revived.get_config() == config

    # 2. Eager call.
    keras.utils.set_random_seed(1)
    layer = layer_cls(**init_kwargs)
    output = layer(*args, **tensor_kwargs, **call_kwargs)
    shapes = [tuple(o.shape) for o in tree.flatten(output)]
    if expected_output_shape is not None:
        assert shapes == _shape_list(expected_output_shape), shapes
    for o in tree.flatten(output):
        assert np.all(np.isfinite(np.asarray(o)))

    # 3. Symbolic call, batch unknown.
    symbolic = layer_cls(**init_kwargs)(
        *tree.map_structure(_symbolic, args),
        **tree.map_structure(_symbolic, tensor_kwargs),
        **call_kwargs,
    )
    assert [tuple(o.shape)[1:] for o in tree.flatten(symbolic)] == [s[1:] for s in shapes]

    # 4. Weights.
    if expected_num_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_num_trainable_weights
    assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights
    assert distinct_weights(layer.weights) == []

    # 5. The same seed, the same weights.
    keras.utils.set_random_seed(1)
    again = layer_cls(**init_kwargs)
    again(*args, **tensor_kwargs, **call_kwargs)
    for a, b in zip(layer.weights, again.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)

    if extra_check is not None:
        extra_check(layer, output)

    # 6. One training step.
    if run_training_check:
        model = LayerModel(layer, call_kwargs, name="layer_model")
        inputs = (tuple(args), tensor_kwargs)
        before = [np.array(v) for v in layer.trainable_weights]
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        batch = len(np.asarray(tree.flatten(args)[0]))
        target = np.ones((batch, len(tree.flatten(output))), "float32")
        history = model.fit(inputs, target, batch_size=batch, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
        still = [
            v.path
            for v, b in zip(layer.trainable_weights, before)
            if len(v.shape) >= 2 and np.array_equal(np.asarray(v), b)
        ]
        assert still == [], f"kernels without an update in one fit step: {still}"
    return layer
