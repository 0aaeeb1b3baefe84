"""Pixel encodings a record can hold (raw, png, jpeg). No TensorFlow here: writer workers import it."""

from __future__ import annotations

import enum
import io

import numpy as np
from PIL import Image


class ImageEncoding(str, enum.Enum):
    raw = "raw"  # uint8 pixels, row-major HWC: biggest on disk, no decoding cost when read
    png = "png"  # lossless
    jpeg = "jpeg"  # lossy (writer.jpeg_quality), smallest


def encode_pixels(pixels: np.ndarray, encoding: ImageEncoding, jpeg_quality: int = 90) -> bytes:
    """uint8 [H, W, C] -> the bytes stored in the record's `image` feature."""
    if encoding is ImageEncoding.raw:
        return pixels.tobytes()
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    buffer = io.BytesIO()
    if encoding is ImageEncoding.png:
        image.save(buffer, format="PNG", compress_level=1)  # fast; PNG's higher levels gain little on photos
    else:
        image.save(buffer, format="JPEG", quality=jpeg_quality)
    return buffer.getvalue()
