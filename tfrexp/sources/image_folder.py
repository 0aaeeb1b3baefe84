"""Folders of image files: find and label them, split them by a stable hash of their path, and turn each
file into an example (decoded, converted to the dataset's channels, resized, encoded) or a skip with a reason.

No TensorFlow here: `prepare_file` runs in the writer's shard tasks (worker processes, Ray nodes).
"""

from __future__ import annotations

import enum
import functools
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np
from PIL import Image, ImageOps

from tfrexp.config.schema import require
from tfrexp.errors import ConfigError, DataError
from tfrexp.records.encoding import PixelEncoder
from tfrexp.records.examples import Example, Examples, Skipped
from tfrexp.sources.base import DatasetSource

class Resize(str, enum.Enum):
    squash = "squash"  # stretch to the target size, ignoring the aspect ratio
    pad = "pad"  # fit inside the target, keep the aspect ratio, pad with black
    crop = "crop"  # fill the target, keep the aspect ratio, crop the centre


class Layout(str, enum.Enum):
    auto = "auto"  # class_folders if the folder holds subfolders, else filename_label
    class_folders = "class_folders"  # <path>/<class>/<image>  (PetImages/Cat/1.jpg, train/cats/cat.1.jpg)
    filename_label = "filename_label"  # <path>/<image>, the class in the name (train/cat.0.jpg)


@dataclass
class Settings:
    """`dataset.source` of kind image_folder: image files labelled by subfolder or by file name, resized at
    write time."""

    kind: str = "image_folder"
    path: Optional[str] = None
    layout: Layout = Layout.auto
    filename_pattern: str = r"^(?P<label>[A-Za-z]+)[._-]"  # regex with a `label` group (filename_label)
    extensions: List[str] = field(default_factory=lambda: [".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"])
    resize: Resize = Resize.squash
    test_fraction: float = 0.1  # of the files, by path hash, when the folder has no test/ subfolder

    def __post_init__(self) -> None:
        require(self.path is not None, "dataset.source.path", self.path,
                "is not set: set TFREXP_DATA_DIR or dataset.source.path=<folder>")
        require(Path(self.path).is_dir(), "dataset.source.path", self.path, "is not an existing directory")
        require(0.0 <= self.test_fraction < 1.0, "dataset.source.test_fraction", self.test_fraction,
                "must be in [0, 1)")
        if self.layout is not Layout.class_folders:
            try:
                require("label" in re.compile(self.filename_pattern).groupindex, "dataset.source.filename_pattern",
                        self.filename_pattern, "needs a (?P<label>...) group")
            except re.error as error:
                raise ConfigError(f"dataset.source.filename_pattern={self.filename_pattern!r}: {error}") from None


class Source(DatasetSource):
    settings: Settings
    uses_split_seed = False  # splits come from a hash of each file's path, not from a seeded draw

    def content_identity(self) -> dict:
        return identity(self.settings)

    def examples(self, encoder: PixelEncoder) -> Examples:
        """Every split's image files, to be decoded by the writer's shard tasks."""
        dataset = self.dataset
        listing = list_files(self.settings, dataset.class_names, dataset.validation_fraction)
        by_split: dict[str, list[Candidate]] = {}
        for candidate in listing.candidates:
            by_split.setdefault(candidate.split, []).append(candidate)
        skipped = list(listing.skipped)
        limit = dataset.max_examples_per_split
        if limit is not None:
            for name, items in by_split.items():
                by_split[name] = stratified_slice(items, limit)
                chosen = {item.relative for item in by_split[name]}
                skipped += [Skipped(item.relative, f"left out by dataset.max_examples_per_split={limit}")
                            for item in items if item.relative not in chosen]
        return Examples(
            splits=dict(sorted(by_split.items())),
            prepare=functools.partial(prepare_file, str(Path(self.settings.path).resolve()),
                                      image_shape=tuple(dataset.image_shape), resize=self.settings.resize,
                                      encoder=encoder),
            class_names=listing.class_names,
            skipped=skipped,
            files_found=listing.files_found,
            decodes_files=True,
        )


SPLIT_FOLDERS = {"train": "train", "validation": "validation", "val": "validation", "valid": "validation",
                 "test": "test"}


@dataclass(frozen=True)
class Candidate:
    """An image file to read, with its split and class."""

    relative: str  # '/'-separated path under the source folder: the file's identity
    split: str
    label: int


@dataclass
class Listing:
    candidates: list[Candidate]  # sorted by path within each split
    skipped: list[Skipped]  # files found that are not images of a class
    class_names: list[str]
    files_found: int


def identity(source: Settings) -> dict:
    """Every file's path, size and modification time, folded into one digest (no file is read)."""
    digest = hashlib.sha256()
    count = 0
    root = Path(source.path).resolve()
    for relative in _all_files(root):
        stat = (root / relative).stat()
        digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        count += 1
    return {"kind": "image_folder", "path": str(root), "files": count, "files_sha256": digest.hexdigest(),
            "layout": source.layout.value, "filename_pattern": source.filename_pattern,
            "extensions": sorted(source.extensions), "resize": source.resize.value,
            "test_fraction": source.test_fraction}


def list_files(source: Settings, class_names: list[str] | None, validation_fraction: float) -> Listing:
    """Find every file; label and split the images, and say why each other file is left out."""
    root = Path(source.path).resolve()
    files = _all_files(root)
    split_folders = _split_folders(root)
    has_folder = {SPLIT_FOLDERS[name.lower()] for name in split_folders}
    pattern = re.compile(source.filename_pattern)
    extensions = {extension.lower() for extension in source.extensions}
    layouts: dict[str, Layout] = {}
    labelled, skipped = [], []
    for relative in files:
        parts = relative.split("/")
        split = None
        if split_folders:
            if parts[0] not in split_folders or len(parts) == 1:
                skipped.append(Skipped(relative, "outside the split folders"))
                continue
            split, parts = SPLIT_FOLDERS[parts[0].lower()], parts[1:]
        if Path(parts[-1]).suffix.lower() not in extensions:
            skipped.append(Skipped(relative, f"not an image file (extension '{Path(parts[-1]).suffix}')"))
            continue
        base = relative.split("/")[0] if split_folders else ""
        if base not in layouts:
            layouts[base] = source.layout if source.layout is not Layout.auto else _detect_layout(root / base)
        if layouts[base] is Layout.class_folders:
            if len(parts) < 2:
                skipped.append(Skipped(relative, "not inside a class folder"))
                continue
            label_name = parts[0]
        else:
            match = pattern.match(parts[-1])
            if match is None:
                skipped.append(Skipped(relative, f"file name does not match {source.filename_pattern!r}"))
                continue
            label_name = match.group("label")
        if split in (None, "train"):
            # Splits without a folder of their own are carved from train by the path's hash.
            split = _hash_split(relative, source.test_fraction, validation_fraction, has_folder)
        labelled.append((relative, split, label_name))

    if not labelled:
        raise DataError(f"{root}: no image files found (looked for {', '.join(sorted(extensions))})")
    found_names = sorted({label for _, _, label in labelled})
    # With class folders, every folder is a class, also one without a single usable image.
    folder_names = sorted({name for base, layout in layouts.items() if layout is Layout.class_folders
                           for name in _subfolders(root / base)})
    names = list(class_names) if class_names is not None else sorted({*found_names, *folder_names})
    if len(names) < 2:
        raise DataError(f"{root}: found only the class(es) {names}; a classifier needs at least 2")
    unknown = sorted(set(found_names) - set(names))
    if unknown:
        raise DataError(f"{root}: classes {unknown} are not in dataset.class_names {names}")
    empty = [name for name in names if name not in found_names]
    if empty:
        raise DataError(f"{root}: no images for class(es) {empty}")
    candidates = [Candidate(relative, split, names.index(label)) for relative, split, label in labelled]
    return Listing(candidates, skipped, names, len(files))


def prepare_file(
    root: str, candidate: Candidate, image_shape: tuple[int, int, int], resize: Resize, encoder: PixelEncoder,
) -> Example:
    """One file -> (encoded pixels, label), or the reason it cannot be used. Never raises on bad content."""
    path = Path(root) / candidate.relative
    if path.stat().st_size == 0:
        return Skipped(candidate.relative, "empty file")
    height, width, channels = image_shape
    try:
        with Image.open(path) as image:
            image.load()  # decodes the whole file: truncated data fails here, not at training time
            image = image.convert("L" if channels == 1 else "RGB")  # grayscale, palette, CMYK, RGBA ...
    except Image.UnidentifiedImageError:
        return Skipped(candidate.relative, "not an image (unrecognised content)")
    except Image.DecompressionBombError:
        return Skipped(candidate.relative, "image too large to decode safely")
    except (OSError, ValueError, SyntaxError) as error:  # Pillow signals corrupt data with all three
        return Skipped(candidate.relative, f"corrupt or truncated image ({error})")
    if resize is Resize.squash:
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    elif resize is Resize.pad:
        image = ImageOps.pad(image, (width, height), Image.Resampling.BILINEAR, color=0)
    else:
        image = ImageOps.fit(image, (width, height), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8).reshape(height, width, channels)
    return encoder(pixels), candidate.label


def _all_files(root: Path) -> list[str]:
    """Every regular file under root, as sorted '/'-separated relative paths."""
    found = []
    for directory, subdirectories, names in os.walk(root):
        subdirectories.sort()
        base = Path(directory).relative_to(root)
        found.extend((base / name).as_posix() for name in names if (Path(directory) / name).is_file())
    return sorted(found)


def _split_folders(root: Path) -> list[str]:
    """Subfolder names that are splits, when the folder is organised by split (it has a train/ folder)."""
    names = [entry.name for entry in root.iterdir() if entry.is_dir()]
    if not any(name.lower() == "train" for name in names):
        return []
    return [name for name in names if name.lower() in SPLIT_FOLDERS]


def _subfolders(folder: Path) -> list[str]:
    return [entry.name for entry in folder.iterdir() if entry.is_dir()]


def _detect_layout(folder: Path) -> Layout:
    return Layout.class_folders if any(entry.is_dir() for entry in folder.iterdir()) else Layout.filename_label


def stratified_slice(items: list[Candidate], limit: int) -> list[Candidate]:
    """At most `limit` items with each class in its share (largest remainders get the odd ones), each class's
    chosen by the hash of their paths: the same on every run and machine. Returned in path order."""
    if len(items) <= limit:
        return items
    by_class: dict[int, list[Candidate]] = {}
    for item in items:
        by_class.setdefault(item.label, []).append(item)
    shares = {label: limit * len(members) / len(items) for label, members in by_class.items()}
    quota = {label: int(share) for label, share in shares.items()}
    for label in sorted(shares, key=lambda label: (quota[label] - shares[label], label))[: limit - sum(quota.values())]:
        quota[label] += 1
    chosen = [item for label, members in by_class.items()
              for item in sorted(members, key=lambda item: _path_position(item.relative))[: quota[label]]]
    return sorted(chosen, key=lambda item: item.relative)


def _path_position(relative: str) -> float:
    """A number in [0, 1) from the path alone."""
    return int.from_bytes(hashlib.sha256(relative.encode()).digest()[:8], "big") / 2**64


def _hash_split(relative: str, test_fraction: float, validation_fraction: float, existing: set[str]) -> str:
    """A split from the path alone: stable across runs and machines, and new files move no old ones."""
    position = _path_position(relative)
    if "test" not in existing and position < test_fraction:
        return "test"
    if "validation" not in existing and position < test_fraction + validation_fraction:
        return "validation"
    return "train"
