"""The disk fills up while writing: a clear error, the previous good version untouched, no half
version left. A real 3 MB tmpfs when this machine lets the test mount one, else an injected ENOSPC."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from tfrexp import config, run_context
from tfrexp.errors import RecordsError
from tfrexp.records.verify import verify_version
from helpers import write_records


class SmallDisk:
    def __init__(self, path: Path, monkeypatch, mount: bool) -> None:
        self.path = path
        self.monkeypatch = monkeypatch
        path.mkdir()
        self.mounted = mount and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(path)],
                                                capture_output=True).returncode == 0

    def fill_up(self) -> None:
        """From now on the disk is full: really (3 MB tmpfs), or by an injected ENOSPC on the last file."""
        if self.mounted:
            return
        real_write_text = Path.write_text

        def full(path, *args, **kwargs):
            if path.name == "manifest.json":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            return real_write_text(path, *args, **kwargs)

        self.monkeypatch.setattr(Path, "write_text", full)


@pytest.fixture(params=["tmpfs", "injected"])
def small_disk(request, tmp_path, monkeypatch):
    disk = SmallDisk(tmp_path / "small", monkeypatch, mount=request.param == "tmpfs")
    if request.param == "tmpfs" and not disk.mounted:
        pytest.skip("this machine does not let the test mount a tmpfs; the injected case covers the logic")
    yield disk
    if disk.mounted:
        subprocess.run(["umount", str(disk.path)], check=True)


def test_a_full_disk_is_a_clear_error_and_the_old_version_survives(small_disk, data_dir):
    def settings(examples):
        return config.to_settings(run_context.compose(f"paths.output_dir={small_disk.path / 'outputs'}",
                                                 f"paths.data_dir={data_dir}",
                                                 f"dataset.max_examples_per_split={examples}"))

    small, big = settings(1000), settings(5000)  # about 0.9 MB, which fits, and 4.3 MB, which does not
    good = write_records(small)
    manifest_before = (good.directory / "manifest.json").read_bytes()

    small_disk.fill_up()
    with pytest.raises(RecordsError, match="no space left on the device of .* nothing was published"):
        write_records(big)

    root = good.directory.parent
    assert sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock")) == [good.directory.name]
    assert (good.directory / "manifest.json").read_bytes() == manifest_before
    assert all(check.problem is None for check in verify_version(good.directory))
    assert write_records(small).reused
