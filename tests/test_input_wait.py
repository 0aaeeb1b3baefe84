"""The per-epoch input-wait share: an input-bound run shows it, a fed-from-memory run does not."""

from __future__ import annotations

import keras
import mlflow
import pytest
from mlflow.tracking import MlflowClient

from tfrexp.callbacks import EpochMetricsLogger
from tfrexp.config import Cache, PipelineConfig, Repeat
from tfrexp.pipeline import ReadyTimes, build_dataset
from helpers import write_records
from tfrexp.synthetic import make_catdog_folder
from tfrexp.tracking import MetricBuffer


def _model(shape, heavy: bool):
    inputs = keras.Input(shape=shape, dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    if heavy:  # tens of milliseconds a step on a CPU
        x = keras.layers.Conv2D(32, 3, activation="relu")(x)
        x = keras.layers.Conv2D(32, 3, activation="relu")(x)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.mark.parametrize(
    ("size", "encoding", "parallelism", "cache", "heavy_model", "expected"),
    [
        (150, "png", 1, Cache.none, False, "high"),  # PNG decoding on one thread, a model that costs nothing
        (64, "raw", 2, Cache.memory, True, "low"),  # raw records from memory, a model that costs real compute
    ],
)
def test_input_wait_share_is_measured_per_epoch(tmp_path, make_settings, size, encoding, parallelism, cache,
                                                heavy_model, expected):
    photos = make_catdog_folder(tmp_path / "photos", 60, seed=9, min_size=150, max_size=200, bad_files=False)
    settings = make_settings("dataset=catdog", f"dataset.source.path={photos.root}", f"writer.image_encoding={encoding}",
                             "dataset.validation_fraction=0", "dataset.source.test_fraction=0",
                             f"dataset.image_shape=[{size},{size},3]")
    records = write_records(settings)
    ready = ReadyTimes()
    # infinite: one iterator for the whole fit, 40 steps an epoch, so per-epoch fixed costs stay small
    pipeline = PipelineConfig(batch_size=8, parallelism=parallelism, cache=cache, shuffle_buffer=16,
                              repeat=Repeat.infinite)
    train = build_dataset(records.directory, records.manifest, "train", pipeline, training=True, ready_times=ready)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    with mlflow.start_run() as run:
        logger = EpochMetricsLogger(40 * 8, MetricBuffer(), ready)
        _model(tuple(records.manifest.image_shape), heavy_model).fit(train, epochs=3, steps_per_epoch=40, verbose=0,
                                                             callbacks=[logger])
    shares = [point.value for point in MlflowClient().get_metric_history(run.info.run_id, "input_wait_share")]
    assert len(shares) == 3 and all(0.0 <= share <= 1.0 for share in shares)
    if expected == "high":
        assert min(shares) > 0.25, shares  # decoding overlaps each step a little (prefetch), so not ~1
    else:  # epochs 2 and 3 read only from the cache (the first pass is 15 batches)
        assert max(shares[1:]) < 0.1, shares
