"""The Python API in this process: compose, run (twice: Keras and Hydra state do not leak between runs),
load_split."""

from __future__ import annotations

import signal

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

import tfrexp
from tfrexp.errors import ConfigError

TINY = ["model=cnn_small", "dataset.max_examples_per_split=300", "trainer.epochs=1", "trainer.verbose=0",
        "tracking.log_model=false"]


def test_compose_checks_and_refuses_in_one_line(tmp_path, data_dir):
    for _ in range(2):
        cfg = tfrexp.compose([f"paths.output_dir={tmp_path}", "model=mlp"])
        assert cfg.model["_target_"] == "tfrexp.models.mlp.build_mlp"
    with pytest.raises(ConfigError, match=r"^pipeline.batch_size=0: must be > 0$"):
        tfrexp.compose(["pipeline.batch_size=0"])


def test_run_twice_in_one_process_then_load_the_records(tmp_path, data_dir):
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    overrides = [*TINY, f"paths.output_dir={tmp_path}", f"paths.data_dir={data_dir}"]
    first = tfrexp.run(overrides)
    second = tfrexp.run([*overrides, "trainer.seed=7"])
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    assert not first.records_reused and second.records_reused and first.records_dir == second.records_dir
    assert first.run_id != second.run_id and first.run_name == "mnist-cnn_small"
    client = MlflowClient(first.tracking_uri)
    for result in (first, second):
        run = client.get_run(result.run_id)
        assert run.info.status == "FINISHED" and run.data.metrics["test_accuracy"] == result.test_metrics[
            "test_accuracy"]
        assert result.fit_seconds > 0 and result.objective == run.data.metrics["val_accuracy"]
    assert client.get_run(second.run_id).data.params["trainer.seed"] == "7"

    for _ in range(2):
        train = tfrexp.load_split(first.records_dir, "train", batch_size=100)
        images, labels = next(iter(train))
        assert images.shape == (100, 28, 28, 1) and images.dtype == np.uint8 and labels.dtype == np.int64
        assert sum(int(batch_labels.shape[0]) for _, batch_labels in train) == 270


@pytest.mark.parametrize(("override", "named"), [("model=nope", "model/nope"),
                                                 ("pipeline.batchsize=3", "pipeline.batchsize"),
                                                 ("trainer.epochs=two", "trainer.epochs=two")])
@pytest.mark.parametrize("call", [tfrexp.compose, tfrexp.run])
def test_what_hydra_refuses_is_a_config_error_with_its_message(call, override, named):
    with pytest.raises(ConfigError) as raised:
        call([override])
    assert named in str(raised.value)


def test_a_run_with_the_disk_cache_caches_every_split_and_finishes(tmp_path, data_dir):
    """pipeline.cache=disk caches the validation and test splits too; they were built without a cache folder,
    so every run with a validation split stopped with 'needs a cache directory'."""
    result = tfrexp.run([*TINY, "trainer.epochs=2", "pipeline.cache=disk", f"paths.output_dir={tmp_path}",
                         f"paths.data_dir={data_dir}"])
    run = MlflowClient(result.tracking_uri).get_run(result.run_id)
    assert run.info.status == "FINISHED" and len(result.test_metrics) > 0
    assert not list(tmp_path.rglob("tfdata-cache")), "the run's cache is removed when it ends"
