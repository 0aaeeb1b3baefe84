"""Small convolutional classifiers: blocks of convolutions, each block ending in 2x2 max pooling."""

from __future__ import annotations

import keras
from keras import layers

from tfrexp.errors import ConfigError


def build_cnn(
    input_shape: list[int],
    num_classes: int,
    filters: list[int] = (32, 64),
    kernel_sizes: list[int] | None = None,
    convs_per_block: int = 2,
    dense_units: int = 128,
    dropout: float = 0.25,
    batch_norm: bool = True,
    padding: str = "same",
    batch_norm_momentum: float = 0.9,
    pool_before_norm: bool = False,
) -> keras.Model:
    """Block i has `convs_per_block` convolutions of `filters[i]` channels and `kernel_sizes[i]` (3 when
    null), then 2x2 max pooling. With batch_norm=False, convs_per_block=1, dropout=0 and padding="valid"
    this is the classic conv 32 - pool - conv 64 - pool - dense 128 net.

    batch_norm_momentum is 0.9 rather than Keras's 0.99: at 0.99 the moving statistics that evaluation uses
    need several hundred steps to settle, and short runs then score chance on validation.

    pool_before_norm pools a block's last convolution before its batch norm and ReLU, which then work on a
    quarter of the values: on a CPU, batch norm at full resolution took about 40% of the default net's
    training step (docs/benchmarks.md)."""
    if not 0 <= dropout < 0.5:
        raise ConfigError(f"model.dropout={dropout!r}: must be in [0, 0.5) (the dense layer drops twice as much)")
    sizes = list(kernel_sizes) if kernel_sizes is not None else [3] * len(filters)
    if len(sizes) != len(filters):
        raise ConfigError(f"model.kernel_sizes={sizes}: needs one size per block of model.filters={list(filters)}")
    inputs = keras.Input(shape=tuple(input_shape), dtype="uint8", name="image")
    x = layers.Rescaling(1.0 / 255)(inputs)
    for block, (width, size) in enumerate(zip(filters, sizes)):
        for index in range(convs_per_block):
            name = f"block{block + 1}_conv{index + 1}"
            # Batch norm supplies the bias and is followed by the activation, hence use_bias/activation here.
            x = layers.Conv2D(width, size, padding=padding, use_bias=not batch_norm,
                              activation=None if batch_norm else "relu", name=name)(x)
            if pool_before_norm and index == convs_per_block - 1:
                x = layers.MaxPooling2D(2, name=f"block{block + 1}_pool")(x)
            if batch_norm:
                x = layers.BatchNormalization(momentum=batch_norm_momentum, name=f"{name}_bn")(x)
                x = layers.Activation("relu")(x)
        if not pool_before_norm:
            x = layers.MaxPooling2D(2, name=f"block{block + 1}_pool")(x)
        if dropout:
            x = layers.Dropout(dropout)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(dense_units, use_bias=not batch_norm, activation=None if batch_norm else "relu")(x)
    if batch_norm:
        x = layers.BatchNormalization(momentum=batch_norm_momentum)(x)
        x = layers.Activation("relu")(x)
    if dropout:
        x = layers.Dropout(2 * dropout)(x)
    # float32 logits even under mixed precision, so the softmax in the loss stays stable.
    outputs = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name="cnn")
