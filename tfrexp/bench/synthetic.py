"""Generated image folders shaped like the cats-vs-dogs download, for tests, demos and the benchmark.

Photo-like JPEGs (smooth colour fields, blobs and sensor noise) of random sizes, seeded, in either layout,
plus the kinds of bad files the real download holds: empty files, truncated JPEGs, text named .jpg, PNGs
named .jpg, grayscale and CMYK JPEGs, and stray non-image files.
"""

from __future__ import annotations

import argparse
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("cat", "dog")


@dataclass
class GeneratedFolder:
    root: Path
    good: int = 0  # readable images, grayscale/CMYK/PNG-named-.jpg included
    bad: dict[str, int] = field(default_factory=dict)  # kind -> count of files that must be skipped

    @property
    def files(self) -> int:
        return self.good + sum(self.bad.values())


def photo_like(rng: np.random.Generator, height: int, width: int, label: int) -> np.ndarray:
    """A smooth colour field with a few soft blobs and noise; cats are cast warm, dogs cool."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    # The cast (red against blue, 120 apart) outweighs the spread of the base colour (100), so the classes can
    # be told apart, as real cats and dogs can; the blobs and gradients still hide it from a careless model.
    base = rng.uniform(70, 170, size=3) + (np.array([60, 0, -60]) if label == 0 else np.array([-60, 0, 60]))
    gradient = rng.uniform(-0.3, 0.3, size=(2, 3))
    image = base + (y[..., None] / height - 0.5) * gradient[0] * 255 + (x[..., None] / width - 0.5) * gradient[1] * 255
    for _ in range(rng.integers(2, 6)):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        radius = rng.uniform(0.1, 0.35) * min(height, width)
        blob = np.exp(-(((y - cy) ** 2 + (x - cx) ** 2) / (2 * radius**2)))
        image += blob[..., None] * rng.uniform(-90, 90, size=3)
    image += rng.normal(0, 6, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _jpeg(pixels: np.ndarray, mode: str = "RGB", quality: int = 85) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(pixels)
    (image.convert(mode) if mode != "RGB" else image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def make_catdog_folder(
    root: Path, per_class: int, *, layout: str = "class_folders", seed: int = 0, min_size: int = 200,
    max_size: int = 500, bad_files: bool = True,
) -> GeneratedFolder:
    """Write `per_class` images of each class (PetImages/Cat/1.jpg style, or flat cat.1.jpg style)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    result = GeneratedFolder(root)

    def path_for(label: int, number: int, suffix: str = ".jpg") -> Path:
        name = CLASSES[label]
        if layout == "class_folders":
            return root / name.capitalize() / f"{number}{suffix}"
        return root / f"{name}.{number}{suffix}"

    for label in range(len(CLASSES)):
        for number in range(per_class):
            height, width = rng.integers(min_size, max_size + 1, size=2)
            path = path_for(label, number)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_jpeg(photo_like(rng, int(height), int(width), label)))
            result.good += 1
    if not bad_files:
        return result

    sample = photo_like(rng, 240, 320, 0)
    extra = per_class
    oddities = {
        # readable, but not what the extension or the channels promise: converted and kept
        "grayscale": (path_for(0, extra), _jpeg(sample, "L")),
        "cmyk": (path_for(1, extra), _jpeg(sample, "CMYK")),
        "png_named_jpg": (path_for(0, extra + 1), _png(sample)),
    }
    broken = {
        "empty": (path_for(1, extra + 1), b""),
        "truncated": (path_for(0, extra + 2), _jpeg(sample)[:1500]),
        "text_named_jpg": (path_for(1, extra + 2), b"this is not an image\n" * 20),
        "not_an_image_extension": (path_for(0, extra + 3, suffix=".txt"), b"notes"),
    }
    for path, content in oddities.values():
        path.write_bytes(content)
        result.good += 1
    for kind, (path, content) in broken.items():
        path.write_bytes(content)
        result.bad[kind] = 1
    return result


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description="Generate a cats-vs-dogs-like image folder.")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--per-class", type=int, default=500)
    parser.add_argument("--layout", choices=["class_folders", "filename_label"], default="class_folders")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-bad-files", action="store_true")
    arguments = parser.parse_args()
    made = make_catdog_folder(arguments.folder, arguments.per_class, layout=arguments.layout, seed=arguments.seed,
                              bad_files=not arguments.no_bad_files)
    print(f"{made.root}: {made.files} files ({made.good} readable images, bad: {made.bad or 'none'})")


if __name__ == "__main__":
    main()
