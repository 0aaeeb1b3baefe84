"""A multilayer perceptron on the flattened image."""

from __future__ import annotations

import keras
from keras import layers


def build_mlp(
    input_shape: list[int], num_classes: int, hidden_units: list[int] = (256, 128), dropout: float = 0.2
) -> keras.Model:
    inputs = keras.Input(shape=tuple(input_shape), dtype="uint8", name="image")
    x = layers.Flatten()(layers.Rescaling(1.0 / 255)(inputs))
    for units in hidden_units:
        x = layers.Dense(units, activation="relu")(x)
        if dropout:
            x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name="mlp")
