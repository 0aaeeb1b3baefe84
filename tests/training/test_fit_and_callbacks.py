"""training/fit.py, training/callbacks.py and the model builder, in-process on tiny data: the schedule, the heads, the
callbacks' contract (their order, signals held while an epoch is logged and saved), divergence."""

from __future__ import annotations

import math
import os
import signal
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import signal_in_a_finalizer
from tfrexp.pipeline import ReadyTimes
from tfrexp.training import callbacks, fit
from tfrexp.training.callbacks import EpochMetricsLogger, Interrupts, StopOnDivergence, training_callbacks
from tfrexp.training.devices import visible_devices
from tfrexp.config.schema import Toggle, TrainerConfig
from tfrexp.errors import ConfigError, TrainingDiverged
from tfrexp.experiment import model_builder
from tfrexp.pipeline import FitPlan
from tfrexp.tracking.metrics import MetricBuffer

CNN = {"_target_": "tfrexp.models.convnets.build_cnn", "filters": [4], "dense_units": 8}


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, size=(n, 8, 8, 1), dtype=np.uint8)
    labels = (images.mean(axis=(1, 2, 3)) > 127).astype(np.int64)
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)


def test_the_model_builder_binds_the_config_and_refuses_bad_arguments():
    model = model_builder(CNN)(input_shape=[8, 8, 1], num_classes=3)
    assert model.output_shape == (None, 3)
    with pytest.raises(ConfigError, match="model._target_ is missing"):
        model_builder({"filters": [4]})
    with pytest.raises(ConfigError, match=r"model._target_='nowhere.build'"):
        model_builder({"_target_": "nowhere.build"})
    with pytest.raises(ConfigError, match="unexpected keyword argument 'colour'"):
        model_builder({**CNN, "colour": "red"})


def test_cosine_schedule_warms_up_then_decays_to_zero_as_configured():
    model = model_builder(CNN)(input_shape=[8, 8, 1], num_classes=2)
    trainer = TrainerConfig(learning_rate=0.01, warmup_fraction=0.1)
    device = fit.configure_device(Toggle.off, Toggle.off)
    fit.compile_model(model, trainer, FitPlan(epochs=1, steps_per_epoch=None, total_steps=100,
                                                   examples_per_epoch=1600), device)
    schedule = model.optimizer._learning_rate  # the schedule object Keras was given
    assert float(schedule(0)) == 0.0 and math.isclose(float(schedule(10)), 0.01, rel_tol=1e-6)
    assert float(schedule(55)) < 0.01 and float(schedule(100)) < 1e-6
    assert device.device == "CPU" and device.as_params() == {"device": "CPU", "mixed_precision": False,
                                                            "precision": "float32",
                                                            "jit_compile": False, "replicas": 1,
                                                            "visible_devices": visible_devices()}


def test_mixed_precision_on_a_cpu_is_bfloat16_and_auto_turns_it_on_where_the_cpu_has_amx(monkeypatch):
    """float16 is a GPU's mixed type: on a CPU it was slow, and `on` chose it there. bfloat16 on AMX trained the
    default 1.6x as fast at the same accuracy (docs/benchmarks.md), so `auto` turns it on for such a CPU."""
    try:
        for has_amx, toggle, policy in [(True, Toggle.auto, "mixed_bfloat16"), (False, Toggle.auto, "float32"),
                                        (False, Toggle.on, "mixed_bfloat16"), (True, Toggle.off, "float32")]:
            monkeypatch.setattr(fit, "cpu_has_bfloat16_matrix_units", lambda: has_amx)
            device = fit.configure_device(toggle, Toggle.off)
            assert (device.precision, device.mixed_precision) == (policy, policy != "float32"), (has_amx, toggle)
            assert keras.mixed_precision.global_policy().name == policy
            model = model_builder(CNN)(input_shape=[8, 8, 1], num_classes=2)
            assert model.output.dtype == "float32" and model.layers[2].compute_dtype == policy.split("_")[-1]
    finally:
        keras.mixed_precision.set_global_policy("float32")
    monkeypatch.undo()
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")  # without oneDNN, TensorFlow does not reach AMX
    assert fit.cpu_has_bfloat16_matrix_units() is False


def test_constant_schedule_and_weight_decay_choose_the_optimizer():
    model = model_builder(CNN)(input_shape=[8, 8, 1], num_classes=2)
    plan = FitPlan(1, None, 10, 160)
    device = fit.configure_device(Toggle.off, Toggle.off)
    fit.compile_model(model, TrainerConfig(schedule="constant", weight_decay=0.01), plan, device)
    assert isinstance(model.optimizer, keras.optimizers.AdamW)
    assert math.isclose(float(model.optimizer.learning_rate), TrainerConfig().learning_rate, rel_tol=1e-6)


def test_the_training_step_is_traced_once(monkeypatch):
    """The optimizer is built with the model's variables before fit, so its first trace makes no variable and
    TensorFlow does not trace the step again (it did: two traces per run and per sweep job)."""
    model = model_builder(CNN)(input_shape=[8, 8, 1], num_classes=2)
    fit.compile_model(model, TrainerConfig(), FitPlan(1, None, 4, 64), fit.configure_device(Toggle.off, Toggle.off))
    assert model.optimizer.built
    traces = []
    train_step = model.train_step
    monkeypatch.setattr(model, "train_step", lambda data: traces.append(1) or train_step(data))
    fit.fit(model, _data(), None, FitPlan(1, None, 4, 64), 0, [])
    assert len(traces) == 1


def test_fit_evaluate_and_predict_agree_on_a_binary_head():
    build = model_builder({"_target_": "tfrexp.models.mlp.build_mlp", "hidden_units": [8]})
    model = build(input_shape=[8, 8, 1], num_classes=2)
    model = keras.Model(model.input, keras.layers.Dense(1)(model.layers[-2].output))  # one logit
    fit.compile_model(model, TrainerConfig(), FitPlan(2, None, 8, 64), fit.configure_device(
        Toggle.off, Toggle.off))
    history = fit.fit(model, _data(), _data(seed=1), FitPlan(2, None, 8, 64), 0, [])
    assert [len(values) for values in history.values()] == [2] * len(history) and "val_accuracy" in history
    test = fit.evaluate(model, _data(seed=2))
    assert set(test.metrics) == {"test_accuracy", "test_loss"} and len(test.labels) == len(test.predictions) == 64
    assert math.isclose(test.metrics["test_accuracy"], float((test.labels == test.predictions).mean()), abs_tol=1e-6)


@pytest.mark.parametrize("num_classes", [1, 3])
def test_the_one_pass_test_metrics_are_what_keras_evaluate_gives(num_classes):
    """Loss and accuracy from the pass that also gives the classes equal `model.evaluate`'s, on a softmax head
    and on a one-logit head, with a weight penalty that the compiled loss includes; batches of unequal size."""
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(num_classes, kernel_regularizer=keras.regularizers.L2(0.01))])
    fit.compile_model(model, TrainerConfig(), FitPlan(1, None, 4, 64), fit.configure_device(Toggle.off, Toggle.off))
    fit.fit(model, _data(), None, FitPlan(1, None, 4, 64), 0, [])
    test = _data(n=70, seed=3)  # batches of 16 and a last one of 6
    if num_classes == 3:
        test = test.map(lambda images, labels: (images, labels + tf.cast(images[:, 0, 0, 0] > 200, tf.int64)))
    expected = model.evaluate(test, verbose=0, return_dict=True)
    result = fit.evaluate(model, test)
    assert math.isclose(result.metrics["test_loss"], expected["loss"], rel_tol=1e-5)
    assert math.isclose(result.metrics["test_accuracy"], expected["accuracy"], abs_tol=1e-6)


def test_the_callbacks_run_in_the_contracted_order(tmp_path):
    interrupts = Interrupts()
    logger = EpochMetricsLogger(64, MetricBuffer())
    callbacks = training_callbacks(interrupts, logger, tmp_path / "backup")
    kinds = [type(callback).__name__ for callback in callbacks]
    assert kinds == ["StopOnDivergence", "LambdaCallback", "LambdaCallback", "EpochMetricsLogger",
                     "BackupAndRestore", "LambdaCallback"]
    hold, release = callbacks[2], callbacks[5]
    hold.on_epoch_end(0, {})
    with interrupts.installed():
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the epoch is logged and saved: held back
        with pytest.raises(KeyboardInterrupt, match=f"signal {int(signal.SIGTERM)}"):
            release.on_epoch_end(0, {})  # raised after the save
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # outside the held span: at once
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "the previous handler is back"


def test_a_signal_whose_exception_python_dropped_still_stops_training(tmp_path, monkeypatch):
    """Seen in CI: a run sent SIGTERM in its second epoch trained to the end and exited 0."""
    monkeypatch.chdir(tmp_path)  # had it trained on, its epochs would be logged to ./mlflow.db
    model = model_builder(CNN)(input_shape=(8, 8, 1), num_classes=2)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    interrupts = Interrupts()
    batches = []

    def signal_once_in_a_finalizer(batch, logs):
        batches.append(batch)
        if len(batches) == 2:
            signal_in_a_finalizer(signal.SIGTERM)

    sends = keras.callbacks.LambdaCallback(on_train_batch_end=signal_once_in_a_finalizer)
    callbacks = [*training_callbacks(interrupts, EpochMetricsLogger(64, MetricBuffer()), tmp_path / "b"), sends]
    with interrupts.installed():
        with pytest.raises(KeyboardInterrupt, match=f"signal {int(signal.SIGTERM)}"):
            model.fit(_data(), epochs=3, verbose=0, callbacks=callbacks)
        assert batches == [0, 1], "stopped at the end of the next batch, before anything else saw it"
        with pytest.raises(KeyboardInterrupt):
            interrupts.raise_received()  # and wherever the run goes on after it


def test_a_non_finite_loss_stops_at_that_batch():
    stop = StopOnDivergence()
    stop.on_epoch_begin(2)
    stop.on_train_batch_end(0, {"loss": 0.3})
    with pytest.raises(TrainingDiverged, match="loss is nan at epoch 3, batch 5"):
        stop.on_train_batch_end(4, {"loss": float("nan")})


def test_impossible_model_arguments_are_config_errors():
    with pytest.raises(ConfigError, match=r"model.head='sigmoid': use 'softmax', or 'sigmoid' with exactly 2"):
        model_builder({"_target_": "tfrexp.models.catdog.build_catdog_cnn", "head": "sigmoid"})(
            input_shape=[32, 32, 3], num_classes=3)
    with pytest.raises(ConfigError, match=r"model.kernel_sizes=\[5\]: needs one size per block"):
        model_builder({**CNN, "kernel_sizes": [5], "filters": [4, 8]})(input_shape=[8, 8, 1], num_classes=2)
    # Keras' own refusals were a 30-line traceback; the cnn's 0.5 was refused for a rate of 1.0 it never named.
    with pytest.raises(ConfigError, match=r"^model.dropout=0.5: must be in \[0, 0.5\) \(the dense layer drops twice"):
        model_builder({**CNN, "dropout": 0.5})(input_shape=[8, 8, 1], num_classes=2)
    with pytest.raises(ConfigError, match=r"^model \(tfrexp.models.mlp.build_mlp; model.dropout=1.5\): .*rate"):
        model_builder({"_target_": "tfrexp.models.mlp.build_mlp", "dropout": 1.5})(input_shape=[8, 8, 1],
                                                                                   num_classes=2)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Model:
    steps_per_execution = 1


def test_throughput_and_input_wait_are_measured_on_training_alone(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(callbacks.time, "perf_counter", clock)
    ready = ReadyTimes()
    ready.times = [0.0, 1.5, 2.0, 3.5]  # batch k ready at these times
    buffer = MetricBuffer()
    logged = []
    monkeypatch.setattr(buffer, "log", lambda metrics, step=0: logged.append(metrics))
    logger = EpochMetricsLogger(examples_per_epoch=400, metrics=buffer, ready=ready)
    logger.set_model(_Model())
    logger.on_epoch_begin(0)
    for end in (1.0, 2.0, 3.0, 4.0):  # four steps; step k+1 waited max(0, ready[k+1] - end[k])
        clock.now = end
        logger.on_train_batch_end(0)
    clock.now = 10.0  # validation takes 6 s: no part of the training throughput
    logger.on_epoch_end(0, {"loss": 1.0})
    [metrics] = logged
    assert metrics["epoch_seconds"] == 10.0 and metrics["train_seconds"] == 4.0
    assert metrics["examples_per_second"] == 100.0
    assert metrics["input_wait_share"] == pytest.approx((0.5 + 0.0 + 0.5) / 4.0)


def test_a_time_limit_signal_interrupts_and_is_then_handed_to_the_launcher():
    """submitit handles Slurm's SIGUSR2 by checkpointing and requeueing the job: the run ends first."""
    handed = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: handed.append(signum))
    try:
        interrupts = Interrupts()
        with pytest.raises(KeyboardInterrupt):
            with interrupts.installed():
                try:
                    os.kill(os.getpid(), signal.SIGUSR2)
                    time.sleep(5)  # the handler raises at once; this is not waited for
                finally:
                    while_open = list(handed)
        assert while_open == [] and handed == [signal.SIGUSR2], "handed on once the run has ended"
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_a_loss_that_explodes_without_reaching_nan_is_divergence():
    """The default trainer on cats vs dogs: the loss went 0.69 -> 112 in 4 steps and the run ended FINISHED."""
    stop = StopOnDivergence()
    stop.on_train_begin()
    stop.on_epoch_begin(0)
    for batch, loss in enumerate([0.69, 0.8, 3.0, 9.9]):  # a rough start is no divergence
        stop.on_train_batch_end(batch, {"loss": loss})
    with pytest.raises(TrainingDiverged, match=r"loss rose from 0.69 to 112 .* at epoch 1, batch 5"):
        stop.on_train_batch_end(4, {"loss": 112.0})
    resumed = StopOnDivergence()  # a resumed run starts low: the bar is never under 10
    resumed.on_train_begin()
    resumed.on_epoch_begin(3)
    for batch, loss in enumerate([0.01, 0.2, 0.9]):
        resumed.on_train_batch_end(batch, {"loss": loss})
