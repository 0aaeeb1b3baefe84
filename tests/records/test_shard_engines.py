"""writer.engine: the shard tasks of a version on a real Ray head (127.0.0.1, two worker processes) and locally
give the same version, byte for byte; a task killed half-way is run again; a node that cannot read a file
stops the write in one line, with nothing published."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ray_head, run_tfrexp, start_writer, wait_for, write_records
from tfrexp.bench.synthetic import make_catdog_folder

pytestmark = pytest.mark.slow  # a Ray head, and writers in processes of their own


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A Ray head with two CPUs (two task workers at a time); the environment that connects to it."""
    with ray_head(tmp_path_factory.mktemp("ray"), num_cpus=2) as (address, env, _):
        yield {**env, "RAY_ADDRESS": address}


def _overrides(folder: Path, output_dir: Path, *more: str) -> list[str]:
    return ["dataset=catdog", f"dataset.source.path={folder}", f"paths.output_dir={output_dir}",
            f"paths.data_dir={folder.parent}", *more]


def _write(overrides: list[str], env: dict) -> Path:
    writer = start_writer(*overrides, env=env)
    stdout, stderr = writer.communicate(timeout=600)
    assert writer.returncode == 0, stderr[-3000:]
    outcome, directory = stdout.strip().splitlines()[-1].split(" ", 1)
    assert outcome == "WROTE", stdout
    return Path(directory)


def _shards(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir()) if ".tfrecord-" in path.name}


def test_ray_and_local_write_the_same_version(tmp_path, ray_cluster, make_settings):
    generated = make_catdog_folder(tmp_path / "images", 30, seed=11, min_size=60, max_size=160)  # with bad files
    small = ["dataset.image_shape=[32,32,3]", "writer.image_encoding=png", "writer.shard_size_mb=0.02"]
    on_ray = _write(_overrides(generated.root, tmp_path / "ray", *small, "writer.engine=ray"), ray_cluster)
    local = _write(_overrides(generated.root, tmp_path / "local", *small, "writer.engine=local",
                              "writer.num_workers=2"), os.environ.copy())

    assert on_ray.name == local.name, "the same fingerprint"
    assert _shards(on_ray) == _shards(local) and len(_shards(local)) >= 6
    manifests = [json.loads((directory / "manifest.json").read_text()) for directory in (on_ray, local)]
    for manifest in manifests:
        manifest.pop("created_at")
    assert manifests[0] == manifests[1], "the same splits, shards, sizes and skipped files"
    assert len(manifests[0]["skipped"]) == sum(generated.bad.values())
    verify = subprocess.run([str(Path(sys.executable).with_name("tfrexp-records")), "verify", str(on_ray), str(local)],
                            capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0 and verify.stdout.strip().endswith("all shards ok"), verify.stdout + verify.stderr
    # Each engine reuses what the other wrote: the engine is no part of the version's identity.
    for output_dir, engine in ((tmp_path / "ray", "local"), (tmp_path / "local", "ray")):
        reused = write_records(make_settings(*_overrides(generated.root, output_dir, *small, f"writer.engine={engine}")))
        assert reused.reused and reused.directory.name == local.name


def test_a_shard_task_killed_midway_is_run_again_and_the_version_comes_out_whole(tmp_path, ray_cluster,
                                                                                 make_settings):
    generated = make_catdog_folder(tmp_path / "images", 60, seed=12, min_size=400, max_size=600, bad_files=False)
    settings = ["dataset.image_shape=[64,64,3]", "writer.shard_size_mb=0.5"]  # about 40 photos a shard
    writer = start_writer(*_overrides(generated.root, tmp_path / "ray", *settings, "writer.engine=ray"),
                          env=ray_cluster)
    partials: list[Path] = []
    try:
        wait_for(lambda: partials.extend((tmp_path / "ray").glob("records/catdog/.tmp-*/*.partial-*")) or partials
                 or writer.poll() is not None, 300, "a shard task writing its shard")
        assert partials, f"the writer ended before a shard task was seen: {writer.communicate()[1][-3000:]}"
        os.kill(int(partials[0].name.rsplit("-", 1)[1]), signal.SIGKILL)  # the Ray worker running that task
        stdout, stderr = writer.communicate(timeout=600)
    finally:
        writer.kill()
    assert writer.returncode == 0, stderr[-3000:]
    assert f"removed {partials[0].name}, left by a shard task that died" in stderr
    version = Path(stdout.strip().splitlines()[-1].split(" ", 1)[1])
    assert not list(version.glob("*.partial-*"))
    local = write_records(make_settings(*_overrides(generated.root, tmp_path / "local", *settings,
                                                    "writer.num_workers=1")))
    assert local.directory.name == version.name and _shards(version) == _shards(local.directory)
    assert sum(info.num_examples for info in local.manifest.splits.values()) == generated.good


VANISHING = """
import dataclasses, sys
from tfrexp import config, run_context, sources
from tfrexp.errors import DataError
from tfrexp.records.writer import ensure_records

class SeenByTheDriverOnly:
    '''The folder as the driver lists it, with a file that the nodes cannot see.'''
    def __init__(self, source):
        self.source, self.name, self.image_shape = source, source.name, source.image_shape
    def identity(self):
        return self.source.identity()
    def examples(self, encoder):
        examples = self.source.examples(encoder)
        train = examples.splits["train"]
        train.insert(1, dataclasses.replace(train[0], relative="Cat/not-on-the-nodes.jpg"))
        return examples

settings = config.to_settings(run_context.compose(*sys.argv[1:]))
try:
    ensure_records(SeenByTheDriverOnly(sources.build(settings.dataset)), settings.writer, settings.paths.records_dir)
except DataError as error:
    print(error)
"""


def test_a_file_a_node_cannot_read_stops_the_write_in_one_line(tmp_path, ray_cluster):
    generated = make_catdog_folder(tmp_path / "images", 10, seed=13, min_size=60, max_size=100, bad_files=False)
    overrides = _overrides(generated.root, tmp_path / "ray", "dataset.image_shape=[32,32,3]", "writer.engine=ray")
    result = subprocess.run([sys.executable, "-c", VANISHING, *overrides], env=ray_cluster, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    [line] = result.stdout.strip().splitlines()
    assert line.startswith("writer.engine=ray: the task of catdog-train.tfrecord-") and " failed on node " in line
    assert f"No such file or directory: '{generated.root.resolve()}/Cat/not-on-the-nodes.jpg'" in line
    assert "(a shared file system)" in line
    left = sorted(path.name for path in (tmp_path / "ray" / "records" / "catdog").iterdir())
    assert len(left) == 1 and left[0].endswith(".lock"), f"nothing published, no staging left: {left}"


def test_the_readme_command_writes_the_records_on_the_cluster_and_trains(tmp_path, ray_cluster, make_settings):
    result = run_tfrexp("writer.engine=ray", cwd=tmp_path, env=ray_cluster)  # the default MNIST run, relative paths
    assert result.returncode == 0, result.stderr[-3000:]
    assert "writer.engine=ray)" in result.stdout + result.stderr  # the writer's line: examples, shards, engine
    [version] = (tmp_path / "outputs" / "records" / "mnist").glob("[!.]*")
    reused = write_records(make_settings("writer.engine=local"))  # under tmp_path/outputs too
    assert reused.reused and reused.directory == version
