"""The IDX reader on the real MNIST files: checks, both spellings, and the download path."""

from __future__ import annotations

import functools
import gzip
import http.server
import shutil
import socket
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tfrexp import sources
from tfrexp.errors import DataError
from tfrexp.sources import idx

# Label counts of the real MNIST (digits 0..9), as documented with the data.
TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture
def source(make_settings):
    return sources.build(make_settings().dataset).settings


def test_reads_the_real_mnist_with_digests_checked(source):
    splits = idx.load(source)
    train_images, train_labels = splits["train"]
    test_images, test_labels = splits["test"]
    assert train_images.shape == (60000, 28, 28, 1) and train_images.dtype == np.uint8
    assert test_images.shape == (10000, 28, 28, 1)
    assert np.bincount(train_labels).tolist() == TRAIN_LABEL_COUNTS
    assert np.bincount(test_labels).tolist() == TEST_LABEL_COUNTS


def test_plain_and_gzipped_files_read_the_same(tmp_path, source):
    gzipped = Path(source.dir) / "t10k-labels-idx1-ubyte.gz"
    plain = tmp_path / "t10k-labels-idx1-ubyte"
    plain.write_bytes(gzip.decompress(gzipped.read_bytes()))
    digest = source.sha256["t10k-labels-idx1-ubyte"]
    np.testing.assert_array_equal(idx.read_idx(plain, digest), idx.read_idx(gzipped, digest))


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (b"\x00\x00\x0d\x01" + b"\x00" * 8, "magic"),  # float elements, not unsigned bytes
        (b"\x00\x00\x08\x01\x00\x00\x00\x05abc", "need 13 bytes, the file holds 11"),  # 5 labels promised, 3 follow
        (b"", "magic"),
    ],
)
def test_malformed_files_are_refused_naming_the_file(tmp_path, content, complaint):
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataError, match=complaint) as raised:
        idx.read_idx(path)
    assert str(path) in str(raised.value)


def test_a_digest_mismatch_is_refused(source):
    path = Path(source.dir) / "t10k-labels-idx1-ubyte.gz"
    with pytest.raises(DataError, match="sha256"):
        idx.read_idx(path, "0" * 64)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_no_files_and_no_network_says_where_to_put_them(tmp_path, source):
    offline = replace(source, dir=str(tmp_path / "data" / "mnist"), download_dir=str(tmp_path / "downloads"),
                      mirror=f"http://127.0.0.1:{_closed_port()}/")
    with pytest.raises(DataError) as raised:
        idx.locate(offline, "train-images-idx3-ubyte")
    message = str(raised.value)
    assert "train-images-idx3-ubyte not found" in message
    assert f"Put the files (gzipped or not) into {tmp_path / 'data' / 'mnist'}/" in message
    assert not (tmp_path / "downloads").exists(), "a failed download must leave nothing behind, not even its folder"


def test_downloads_from_a_mirror_and_verifies(tmp_path, source):
    mirror_dir = tmp_path / "mirror"
    shutil.copytree(source.dir, mirror_dir)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mirror_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # The shared copies were compressed anew (same content, other .gz bytes): the content digest checks them.
        online = replace(source, dir=None, download_dir=str(tmp_path / "downloads"), archive_sha256={},
                         mirror=f"http://127.0.0.1:{server.server_address[1]}/")
        labels = idx.read_idx(idx.locate(online, "t10k-labels-idx1-ubyte"), online.sha256["t10k-labels-idx1-ubyte"])
    finally:
        server.shutdown()
    assert (tmp_path / "downloads" / "t10k-labels-idx1-ubyte.gz").is_file()
    assert np.bincount(labels).tolist() == TEST_LABEL_COUNTS


def test_a_download_that_is_not_the_published_file_is_refused(tmp_path, source):
    """Same content, compressed anew: the archive digest tells it from the published file."""
    mirror_dir = tmp_path / "mirror"
    mirror_dir.mkdir()
    content = gzip.decompress((Path(source.dir) / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (mirror_dir / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(content, mtime=1))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mirror_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        online = replace(source, dir=None, download_dir=str(tmp_path / "downloads"),
                         mirror=f"http://127.0.0.1:{server.server_address[1]}/")
        with pytest.raises(DataError, match="does not match its pinned sha256"):
            idx.locate(online, "t10k-labels-idx1-ubyte")
    finally:
        server.shutdown()
    assert not (tmp_path / "downloads").exists(), "nothing of a refused download is kept, not even its folder"


def test_downloads_are_pinned_by_digest(make_settings):
    from tfrexp import sources

    for name in ("mnist", "fashion_mnist"):
        settings = sources.build(make_settings(f"dataset={name}").dataset).settings
        assert sorted(settings.archive_sha256) == sorted(f"{pair[kind]}" for pair in settings.files.values()
                                                         for kind in ("images", "labels")), name
        assert settings.mirror.startswith("https://") or name == "fashion_mnist"
