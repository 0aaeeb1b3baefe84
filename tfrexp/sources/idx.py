"""The IDX file format of the MNIST family: find, download, verify and read the four files of a data set."""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from tfrexp.config import IdxSource
from tfrexp.errors import DataError

log = logging.getLogger(__name__)

_UBYTE = 0x08  # the only element type the MNIST family uses
_DOWNLOAD_TIMEOUT_S = 30


def identity(source: IdxSource) -> dict:
    """What names the source's content, from file metadata only (no file is read)."""
    files = []
    for name in _file_names(source):
        path = locate(source, name)
        stat = path.stat()
        files.append(
            {
                "name": path.name,
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
                "sha256": source.sha256.get(name),
            }
        )
    return {"kind": "idx", "files": files}


def load(source: IdxSource) -> dict[str, tuple[np.ndarray, np.ndarray]]:
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


def locate(source: IdxSource, name: str) -> Path:
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
        return _download(url, Path(source.download_dir) / f"{name}.gz", source.sha256.get(name))
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DataError(f"{name} not found in {where}, and downloading {url} failed ({reason}). {hint}") from None


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


def _file_names(source: IdxSource) -> list[str]:
    return [pair[kind] for pair in source.files.values() for kind in ("images", "labels")]


def _download(url: str, target: Path, expected_sha256: str | None) -> Path:
    """Fetch url into target through a temporary file, so a failed download leaves nothing behind."""
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s -> %s", url, target)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
            shutil.copyfileobj(response, out)
        _check_downloaded(Path(temporary), expected_sha256, url)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return target


def _check_downloaded(path: Path, expected_sha256: str | None, url: str) -> None:
    try:
        content = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as error:
        raise DataError(f"{url}: the download is not a valid gzip file ({error})") from None
    if expected_sha256 is not None and hashlib.sha256(content).hexdigest() != expected_sha256:
        raise DataError(f"{url}: the downloaded content does not match its sha256 {expected_sha256}")
