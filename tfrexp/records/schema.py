"""The one definition of how an image and its label are stored in a tf.train.Example, and read back.

Features: `image` (raw uint8 pixels, row-major [height, width, channels]), `shape` (int64 x3), `label`
(int64). Reading parses a whole batch of serialized records at once.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

FORMAT_VERSION = 1  # bump when the bytes of a record change for the same input; it enters the fingerprint

IMAGE, SHAPE, LABEL = "image", "shape", "label"


def describe(image_shape: list[int]) -> dict:
    """The schema as written into the manifest."""
    return {
        "format_version": FORMAT_VERSION,
        "features": {
            IMAGE: {"type": "bytes", "encoding": "raw", "dtype": "uint8", "layout": "HWC"},
            SHAPE: {"type": "int64", "length": 3},
            LABEL: {"type": "int64", "length": 1},
        },
        "image_shape": list(image_shape),
    }


class ExampleEncoder:
    """Serializes (image, label) pairs; reuses one Example message, since building a new one per record
    costs more than serializing it."""

    def __init__(self) -> None:
        self._example = tf.train.Example()
        feature = self._example.features.feature
        self._image = feature[IMAGE].bytes_list.value
        self._shape = feature[SHAPE].int64_list.value
        self._label = feature[LABEL].int64_list.value
        self._image.append(b"")
        self._label.append(0)

    def encode(self, image: np.ndarray, label: int) -> bytes:
        self._image[0] = image.tobytes()
        del self._shape[:]
        self._shape.extend(image.shape)
        self._label[0] = int(label)
        return self._example.SerializeToString()


_FEATURE_SPEC = {
    IMAGE: tf.io.FixedLenFeature([], tf.string),
    LABEL: tf.io.FixedLenFeature([], tf.int64),
}


def parse_batch(serialized: tf.Tensor, image_shape: list[int]) -> tuple[tf.Tensor, tf.Tensor]:
    """A batch of serialized records -> (uint8 images [B, H, W, C], int64 labels [B])."""
    features = tf.io.parse_example(serialized, _FEATURE_SPEC)
    pixels = tf.io.decode_raw(features[IMAGE], tf.uint8)
    images = tf.reshape(pixels, [-1, *image_shape])
    return images, features[LABEL]
