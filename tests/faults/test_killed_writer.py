"""A writer killed half-way (SIGKILL, one worker or several) leaves no finished version; the next
run writes it cleanly and leaves no temporary folder behind."""

from __future__ import annotations

import os
import signal

import pytest

from helpers import start_writer, wait_for
from tfrexp import config, run_context
from tfrexp.records.verify import verify_version
from helpers import write_records
from tfrexp.bench.synthetic import make_catdog_folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_catdog_folder(tmp_path_factory.mktemp("photos"), 150, seed=5, min_size=200, max_size=320).root


def _staging(root):
    return list(root.glob(".tmp-*")) if root.exists() else []


MOMENTS = {
    "the staging folder was just made": lambda root: bool(_staging(root)),
    "half the shards are written": lambda root: bool(_staging(root)) and len(list(_staging(root)[0].glob(
        "*.tfrecord-*"))) >= 3,
}


@pytest.mark.parametrize(("workers", "moment"), [(1, "half the shards are written"), (2, "half the shards are written"),
                                                 (2, "the staging folder was just made")])
def test_a_killed_writer_leaves_nothing_that_looks_finished(tmp_path, photos, workers, moment):
    overrides = [f"paths.output_dir={tmp_path / 'outputs'}", "dataset=catdog", f"dataset.source.path={photos}",
                 "writer.shard_size_mb=0.3", f"writer.num_workers={workers}"]
    root = tmp_path / "outputs" / "records" / "catdog"
    writer = start_writer(*overrides)

    wait_for(lambda: MOMENTS[moment](root), 120, moment)
    os.killpg(writer.pid, signal.SIGKILL)
    writer.wait(timeout=30)

    finished = [path for path in root.iterdir() if (path / "manifest.json").exists()]
    assert finished == [] and list(root.glob(".tmp-*")), "the killed writer's staging folder is all there is"

    settings = config.to_settings(run_context.compose(*overrides))
    record_set = write_records(settings)
    assert not record_set.reused
    assert list(root.glob(".tmp-*")) == [] and list(root.glob(".old-*")) == []
    assert all(check.problem is None for check in verify_version(record_set.directory))
