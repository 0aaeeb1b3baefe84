"""The cats-vs-dogs style classifier: four conv blocks (32-64-128-128), dense 512, optional augmentation."""

from __future__ import annotations

import keras
from keras import layers

from tfrexp.errors import ConfigError


def build_catdog_cnn(
    input_shape: list[int],
    num_classes: int,
    filters: list[int] = (32, 64, 128, 128),
    dense_units: int = 512,
    dropout: float = 0.5,
    augment: bool = True,
    head: str = "softmax",
) -> keras.Model:
    """head="softmax": num_classes logits; head="sigmoid": one logit (two classes only).

    Augmentation layers (flip, rotation, zoom) are active in training only."""
    if head not in {"softmax", "sigmoid"} or (head == "sigmoid" and num_classes != 2):
        raise ConfigError(f"model.head={head!r}: use 'softmax', or 'sigmoid' with exactly 2 classes")
    inputs = keras.Input(shape=tuple(input_shape), dtype="uint8", name="image")
    x = layers.Rescaling(1.0 / 255)(inputs)
    if augment:
        x = layers.RandomFlip("horizontal")(x)
        x = layers.RandomRotation(0.1)(x)
        x = layers.RandomZoom(0.1)(x)
    for block, width in enumerate(filters):
        x = layers.Conv2D(width, 3, activation="relu", name=f"block{block + 1}_conv")(x)
        x = layers.MaxPooling2D(2, name=f"block{block + 1}_pool")(x)
    x = layers.Flatten()(x)
    if dropout:
        x = layers.Dropout(dropout)(x)
    x = layers.Dense(dense_units, activation="relu")(x)
    outputs = layers.Dense(1 if head == "sigmoid" else num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name="catdog_cnn")
