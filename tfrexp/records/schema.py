"""The one definition of how an image and its label are stored in a tf.train.Example (the write side;
records/reader.py parses it back), and its description in the manifest.

Features: `image` (the pixels: raw uint8 row-major [height, width, channels], or a PNG or JPEG file) and
`label` (int64). The shape is the manifest's (`image_shape`), the same for every record of a version.
TensorFlow is imported only by the encoder, so that reading a manifest does not load it.
"""

from __future__ import annotations

from dataclasses import dataclass

from tfrexp.config.schema import ImageEncoding

# Bump when the bytes of a record change for the same input; it enters the fingerprint.
# 2: no `shape` feature (nothing read it; the manifest holds the shape).
FORMAT_VERSION = 2

IMAGE, LABEL = "image", "label"


@dataclass(frozen=True)
class RecordSchema:
    """What every record of a version holds: the manifest's `schema`."""

    image_shape: list[int]  # [height, width, channels]
    image_encoding: ImageEncoding
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict:
        """As the manifest writes it: the features spelled out for readers without tfrexp."""
        return {
            "format_version": self.format_version,
            "features": {
                IMAGE: {"type": "bytes", "encoding": self.image_encoding.value, "dtype": "uint8", "layout": "HWC"},
                LABEL: {"type": "int64", "length": 1},
            },
            "image_shape": list(self.image_shape),
        }

    @classmethod
    def from_json(cls, data: dict) -> RecordSchema:
        return cls(image_shape=list(data["image_shape"]),
                   image_encoding=ImageEncoding(data["features"][IMAGE]["encoding"]),
                   format_version=int(data["format_version"]))


class ExampleEncoder:
    """Serializes (encoded image, label) pairs; reuses one Example message, since building a new one per
    record costs more than serializing it."""

    def __init__(self) -> None:
        import tensorflow as tf

        self._example = tf.train.Example()
        feature = self._example.features.feature
        self._image = feature[IMAGE].bytes_list.value
        self._label = feature[LABEL].int64_list.value
        self._image.append(b"")
        self._label.append(0)

    def encode(self, image: bytes, label: int) -> bytes:
        self._image[0] = image
        self._label[0] = label
        # deterministic: features in key order. Map order is otherwise up to the protobuf runtime, and a Ray
        # worker wrote `label` before `image` where this process writes them the other way round.
        return self._example.SerializeToString(deterministic=True)
