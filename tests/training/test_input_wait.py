"""The per-epoch input-wait share and throughput, logged by a real fit from real records. The arithmetic is
checked with a fixed clock in test_fit_and_callbacks.py; here, what a run logs and that it is consistent."""

from __future__ import annotations

import keras
import mlflow
from mlflow.tracking import MlflowClient

from helpers import write_records
from tfrexp.training.callbacks import EpochMetricsLogger
from tfrexp.config import Cache, PipelineConfig, Repeat
from tfrexp.pipeline import ReadyTimes, build_dataset
from tfrexp.bench.synthetic import make_catdog_folder
from tfrexp.tracking.metrics import MetricBuffer


def test_every_epoch_logs_its_input_wait_and_training_throughput(tmp_path, make_settings):
    photos = make_catdog_folder(tmp_path / "photos", 30, seed=9, min_size=60, max_size=90, bad_files=False)
    settings = make_settings("dataset=catdog", f"dataset.source.path={photos.root}", "writer.image_encoding=png",
                             "dataset.validation_fraction=0", "dataset.source.test_fraction=0",
                             "dataset.image_shape=[48,48,3]", "writer.num_workers=1")
    records = write_records(settings)
    ready = ReadyTimes()
    pipeline = PipelineConfig(batch_size=8, parallelism=1, cache=Cache.none, shuffle_buffer=16, repeat=Repeat.infinite)
    train = build_dataset(records.directory, records.manifest, "train", pipeline, training=True, ready_times=ready)
    inputs = keras.Input(shape=(48, 48, 3), dtype="uint8")
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(
        keras.layers.Rescaling(1 / 255)(inputs))))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    with mlflow.start_run() as run:
        model.fit(train, epochs=3, steps_per_epoch=10, verbose=0,
                  callbacks=[EpochMetricsLogger(10 * 8, MetricBuffer(), ready)])
    client = MlflowClient()
    history = {name: [point.value for point in client.get_metric_history(run.info.run_id, name)]
               for name in ("input_wait_share", "train_seconds", "epoch_seconds", "examples_per_second")}
    assert all(len(values) == 3 for values in history.values())
    assert all(0.0 <= share <= 1.0 for share in history["input_wait_share"])
    for train_s, epoch_s, rate in zip(history["train_seconds"], history["epoch_seconds"],
                                      history["examples_per_second"]):
        assert 0 < train_s <= epoch_s and abs(rate - 80 / train_s) < 1e-6 * rate
    assert len(ready.times) >= 30, "each training batch stamped when it was ready"
