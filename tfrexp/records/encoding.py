"""Pixel encodings a record can hold (raw, png, jpeg). No TensorFlow here: writer workers import it."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tfrexp.config.schema import ImageEncoding


@dataclass(frozen=True)
class PixelEncoder:
    """uint8 [H, W, C] -> the bytes stored in the record's `image` feature. Picklable, for worker processes."""

    encoding: ImageEncoding = ImageEncoding.raw
    jpeg_quality: int = 90

    def __call__(self, pixels: np.ndarray) -> bytes:
        if self.encoding is ImageEncoding.raw:
            return pixels.tobytes()
        image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
        buffer = io.BytesIO()
        if self.encoding is ImageEncoding.png:
            image.save(buffer, format="PNG", compress_level=1)  # fast; PNG's higher levels gain little on photos
        else:
            image.save(buffer, format="JPEG", quality=self.jpeg_quality)
        return buffer.getvalue()
