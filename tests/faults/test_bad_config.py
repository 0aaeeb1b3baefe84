"""Bad configuration and bad paths stop before any work, in one line, creating nothing."""

from __future__ import annotations

import pytest

from helpers import run_tfrexp


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("dataset=no_such_set", "Could not find 'dataset/no_such_set'"),
        ("pipeline.batchsize=32", "Key 'batchsize' not in 'PipelineConfig'"),
        ("+trainer.epoch=3", "trainer.epoch: unknown key"),
        ("trainer.epochs=two", "Value 'two' of type 'str' could not be converted to Integer"),
        ("pipeline.batch_size=-8", "pipeline.batch_size=-8: must be > 0"),
        ("writer.shard_size_mb=0", "writer.shard_size_mb=0.0: must be > 0"),
        ("paths.data_dir=/no/such/folder", "paths.data_dir='/no/such/folder': is not an existing directory"),
        ("paths.data_dir={file}", "is not an existing directory"),
        ("dataset.name=../../etc", "dataset.name='../../etc': must be a plain name"),
        # It was found only once the run had trained and tested (and in every job of a sweep).
        ("trainer.objective=val_acc", "trainer.objective='val_acc': must be one of val_accuracy, val_loss,"),
        # A store in a folder that cannot be made was a 25-line FileExistsError traceback, after the run started.
        ("tracking.uri=sqlite:///{file}/mlflow.db", "/mlflow.db': cannot be created: "),
    ],
)
def test_refused_before_any_work_and_nothing_created(tmp_path, override, message):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    outputs = tmp_path / "outputs"
    result = run_tfrexp(override.format(file=a_file), f"paths.output_dir={outputs}")
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not outputs.exists(), f"a refused run created {sorted(p.name for p in outputs.rglob('*'))}"


def test_an_output_folder_that_cannot_be_made_is_refused_in_one_line(tmp_path):
    """It was Hydra's traceback (FileExistsError, NotADirectoryError) on making the run folder."""
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    result = run_tfrexp(f"paths.output_dir={a_file}/outputs")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"tfrexp: error: paths.output_dir='{a_file}/outputs': cannot be created: {a_file} is not a directory")


def test_a_sweep_of_a_key_the_config_lacks_is_refused_before_its_parent_run(tmp_path):
    """Each job failed in Hydra's composition, after the sweep's MLflow parent run had been made (FAILED)."""
    outputs = tmp_path / "outputs"
    result = run_tfrexp("-m", "trainer.epoch=1,2", "model=cnn_small,mlp", f"paths.output_dir={outputs}")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "tfrexp: error: trainer.epoch: no such key in the config (swept by trainer.epoch=1,2); to add it, "
        "+trainer.epoch=1,2")
    assert not outputs.exists(), f"a refused sweep created {sorted(p.name for p in outputs.rglob('*'))}"
