"""Flipped or cut bytes in a shard are found by `tfrexp-records verify` and stop training with the
shard's name and how to rebuild; the MLflow run ends FAILED with that message."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from helpers import run_tfrexp
from tfrexp import config, run_context
from helpers import write_records

SLICE = ["dataset.max_examples_per_split=2000", "writer.shard_size_mb=0.5"]


@pytest.fixture
def version(tmp_path, data_dir):
    settings = config.to_settings(run_context.compose(f"paths.output_dir={tmp_path / 'outputs'}",
                                                 f"paths.data_dir={data_dir}", *SLICE))
    return write_records(settings)


def _records_tool(*arguments):
    return subprocess.run([sys.executable, "-m", "tfrexp.records_cli", *arguments], capture_output=True, text=True)


def _records_before(path, offset):
    """Whole records of a shard that end before `offset`, from TFRecord's framing: length (8 bytes), its CRC
    (4), the data, its CRC (4)."""
    data, start, count = path.read_bytes(), 0, 0
    while start + 8 <= len(data):
        end = start + 16 + int.from_bytes(data[start:start + 8], "little")
        if end > offset:
            break
        start, count = end, count + 1
    return count


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_verify_names_the_bad_shard(version, damage):
    good = _records_tool("verify", str(version.directory))
    assert good.returncode == 0 and "all shards ok" in good.stdout
    # Only its own lines: TensorFlow's start-up notices (oneDNN, `failed call to cuInit`) were printed.
    assert not [line for line in good.stderr.splitlines() if line.startswith(("I0000", "E0000", "W0000"))]
    shard = version.directory / version.manifest.splits["train"].shards[1].file
    middle = shard.stat().st_size // 2
    if damage == "flip":
        _flip(shard, middle)
    else:
        shard.write_bytes(shard.read_bytes()[:middle])
    bad = _records_tool("verify", str(version.directory))
    assert bad.returncode == 1
    [bad_line] = [line for line in bad.stdout.splitlines() if line.startswith("BAD")]
    assert shard.name in bad_line and "1 bad shard(s)" in bad.stdout
    # The records before the damage, counted one by one: it said 0, counting in batches of 512. (TensorFlow
    # reads a shard cut short as one that ends early.)
    before = _records_before(shard, middle)
    assert (f": unreadable after {before} records (" if damage == "flip" else f": {before} records, the manifest says "
            ) in bad_line, bad_line
    assert sum(line.startswith("ok ") for line in bad.stdout.splitlines()) == sum(
        len(info.shards) for info in version.manifest.splits.values()) - 1


def test_a_folder_that_is_not_there_is_one_line_at_once(tmp_path):
    """It took TensorFlow's import, then blamed an unreadable manifest and suggested a rebuild."""
    for command in (["verify", str(tmp_path), str(tmp_path / "nope")], ["inspect", str(tmp_path / "nope")]):
        told = _records_tool(*command)
        assert told.returncode == 2 and told.stderr == f"tfrexp-records: error: no such folder: {tmp_path / 'nope'}\n"
        assert "tensorflow" not in told.stdout


def test_inspect_shows_counts_schema_and_examples(version):
    shown = _records_tool("inspect", str(version.directory), "--examples", "2")
    assert shown.returncode == 0, shown.stderr
    assert "train: 1800 examples in" in shown.stdout and "image [28, 28, 1] raw" in shown.stdout
    assert shown.stdout.count("example: label") == 2


def test_training_on_a_corrupt_shard_fails_naming_it(tmp_path, version):
    shard = version.directory / version.manifest.splits["train"].shards[2].file
    _flip(shard, shard.stat().st_size // 3)
    result = run_tfrexp(*SLICE, "model=mlp", "trainer.epochs=1", "trainer.verbose=0", "tracking.log_model=false",
                        f"paths.output_dir={tmp_path / 'outputs'}")
    assert result.returncode != 0
    assert f"corrupt records: {shard}" in result.stderr and "writer.force=true" in result.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs'}/mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name("tfrexp").experiment_id])
    assert run.info.status == "FAILED" and shard.name in run.data.tags["error"]
