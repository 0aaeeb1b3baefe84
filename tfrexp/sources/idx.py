"""The IDX file format of the MNIST family: find, download, verify and read the four files of a data set."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

import numpy as np
from omegaconf import MISSING

from tfrexp.config.schema import require
from tfrexp.errors import DataError
from tfrexp.sources.base import ArraySource, Splits

log = logging.getLogger(__name__)

_UBYTE = 0x08  # the only element type the MNIST family uses


@dataclass
class Settings:
    """`dataset.source` of kind idx: the MNIST family's IDX files (MNIST, Fashion-MNIST, KMNIST)."""

    kind: str = "idx"
    dir: Optional[str] = None  # searched first; null when no data directory is configured
    download_dir: str = MISSING  # where files are downloaded to (and searched second)
    mirror: Optional[str] = None  # base URL; null disables downloading
    # split -> {"images": file name, "labels": file name}, without ".gz" (both spellings are read)
    files: Dict[str, Dict[str, str]] = MISSING
    # file name -> sha256 of the decompressed content; files not listed are checked for structure only
    sha256: Dict[str, str] = field(default_factory=dict)
    # file name -> sha256 of the published <name>.gz (TensorFlow Datasets lists them in its url_checksums),
    # checked on every download; a local copy may be compressed anew, so `sha256` is what checks those
    archive_sha256: Dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split, pair in self.files.items():
            require(set(pair) == {"images", "labels"}, f"dataset.source.files.{split}", dict(pair),
                    "needs exactly the keys 'images' and 'labels'")


class Source(ArraySource):
    settings: Settings

    def content_identity(self) -> dict:
        """Each file's name, size, modification time and pinned digest (no file is read)."""
        files = []
        for name in _file_names(self.settings):
            path = locate(self.settings, name)
            stat = path.stat()
            files.append({"name": path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                          "sha256": self.settings.sha256.get(name),
                          "archive_sha256": self.settings.archive_sha256.get(name)})
        return {"kind": "idx", "files": files}

    def load_arrays(self) -> Splits:
        return load(self.settings)


def load(source: Settings) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each split's (images uint8 [N, H, W, 1], labels int64 [N]), every file checked."""
    splits = {}
    for split, pair in source.files.items():
        images = read_idx(locate(source, pair["images"]), source.sha256.get(pair["images"]))
        labels = read_idx(locate(source, pair["labels"]), source.sha256.get(pair["labels"]))
        if images.ndim != 3 or labels.ndim != 1:
            raise DataError(
                f"{pair['images']} must hold images [N, H, W] and {pair['labels']} labels [N]; "
                f"got shapes {images.shape} and {labels.shape}"
            )
        if len(images) != len(labels):
            raise DataError(
                f"split {split!r}: {pair['images']} holds {len(images)} images "
                f"but {pair['labels']} holds {len(labels)} labels"
            )
        splits[split] = (images[..., np.newaxis], labels.astype(np.int64))
    return splits


def locate(source: Settings, name: str) -> Path:
    """The file `name` (or `name.gz`) from source.dir, else source.download_dir, else downloaded there."""
    search = [Path(d) for d in (source.dir, source.download_dir) if d]
    for directory in search:
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    where = " or ".join(str(d) for d in search)
    hint = f"Put the files (gzipped or not) into {search[0]}/"
    if not source.mirror:
        raise DataError(f"{name} not found in {where}, and no mirror is configured. {hint}")
    url = source.mirror.rstrip("/") + f"/{name}.gz"
    try:
        return _download(url, Path(source.download_dir) / f"{name}.gz", source.sha256.get(name),
                         source.archive_sha256.get(name))
    except OSError as error:
        raise DataError(f"{name} not found in {where}, and downloading {url} failed ({error}). {hint}") from None


def read_idx(path: Path, expected_sha256: str | None = None) -> np.ndarray:
    """Parse one IDX file (gzipped or not), checking magic, dimensions, size and, if given, the digest."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise DataError(f"{path}: not a valid gzip file ({error})") from None
    if expected_sha256 is not None:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != expected_sha256:
            raise DataError(f"{path}: sha256 of the content is {digest}, expected {expected_sha256}")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _UBYTE:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (magic {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    expected = header + int(np.prod(dims))
    if len(dims) != ndim or len(raw) != expected:
        raise DataError(f"{path}: dimensions {dims} need {expected} bytes, the file holds {len(raw)}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _file_names(source: Settings) -> list[str]:
    return [pair[kind] for pair in source.files.values() for kind in ("images", "labels")]


def _download(url: str, target: Path, expected_sha256: str | None, archive_sha256: str | None) -> Path:
    """Fetch url with Keras's downloader (progress bar, partial file removed on failure) into a hidden
    staging folder, check it, then move it into place: a failed download leaves nothing behind."""
    import keras  # heavy: only when a file must be downloaded

    staging = target.parent / f".download-{target.name}-{os.getpid()}"
    made = [folder for folder in (target.parent, *target.parent.parents) if not folder.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)  # Keras falls back to ~/.keras for a folder it cannot write
    log.info("downloading %s -> %s", url, target)
    try:
        try:
            fetched = keras.utils.get_file(fname=target.name, origin=url, cache_dir=str(target.parent),
                                           cache_subdir=staging.name, force_download=True, file_hash=archive_sha256,
                                           hash_algorithm="sha256")
        except ValueError as error:  # Keras's word for a file whose digest is not the pinned one
            raise DataError(f"{url}: the download does not match its pinned sha256 {archive_sha256} ({error})") \
                from None
        except Exception as error:  # Keras raises a bare Exception naming the URL and the reason
            raise OSError(str(error).split(" -- ")[-1]) from None
        _check_downloaded(Path(fetched), expected_sha256, url)
        os.replace(fetched, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not target.exists():  # nor the folders made for it (outputs/data/<name>/), while they are empty
            with contextlib.suppress(OSError):  # another process's file arrived: keep the folder, and the error
                for folder in made:
                    if any(folder.iterdir()):
                        break
                    folder.rmdir()
    return target


def _check_downloaded(path: Path, expected_sha256: str | None, url: str) -> None:
    try:
        content = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as error:
        raise DataError(f"{url}: the download is not a valid gzip file ({error})") from None
    if expected_sha256 is not None and hashlib.sha256(content).hexdigest() != expected_sha256:
        raise DataError(f"{url}: the downloaded content does not match its sha256 {expected_sha256}")
