"""The one definition of how an image and its label are stored in a tf.train.Example (the write side;
records/reader.py parses it back).

Features: `image` (the pixels: raw uint8 row-major [height, width, channels], or a PNG or JPEG file) and
`label` (int64). The shape is the manifest's (`image_shape`), the same for every record of a version.
"""

from __future__ import annotations

import tensorflow as tf

from tfrexp.config.schema import ImageEncoding

# Bump when the bytes of a record change for the same input; it enters the fingerprint.
# 2: no `shape` feature (nothing read it; the manifest holds the shape).
FORMAT_VERSION = 2

IMAGE, LABEL = "image", "label"


def describe(image_shape: list[int], encoding: ImageEncoding) -> dict:
    """The schema as written into the manifest."""
    return {
        "format_version": FORMAT_VERSION,
        "features": {
            IMAGE: {"type": "bytes", "encoding": encoding.value, "dtype": "uint8", "layout": "HWC"},
            LABEL: {"type": "int64", "length": 1},
        },
        "image_shape": list(image_shape),
    }


class ExampleEncoder:
    """Serializes (encoded image, label) pairs; reuses one Example message, since building a new one per
    record costs more than serializing it."""

    def __init__(self) -> None:
        self._example = tf.train.Example()
        feature = self._example.features.feature
        self._image = feature[IMAGE].bytes_list.value
        self._label = feature[LABEL].int64_list.value
        self._image.append(b"")
        self._label.append(0)

    def encode(self, image: bytes, label: int) -> bytes:
        self._image[0] = image
        self._label[0] = label
        return self._example.SerializeToString()
