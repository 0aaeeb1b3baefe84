"""Device set-up, compile, fit and evaluate: plain Keras, each function taking the values it uses."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from tfrexp.config.schema import Distribution, Toggle, TrainerConfig
from tfrexp.pipeline import FitPlan
from tfrexp.training.devices import visible_devices

log = logging.getLogger(__name__)


def _not_a_retracing_notice(record: logging.LogRecord) -> bool:
    """TensorFlow counts the traces of every tf.function made from the same Python code together, and warns of
    "tf.function retracing" (as if one function were traced over and over in a loop) when they are frequent.
    The jobs of a sweep in one process each build a model and trace its Keras steps once: on a small data slice
    that reads as frequent from the third job on. It is the expected cost of a new model, not a fault."""
    return "triggered tf.function retracing" not in record.getMessage()


logging.getLogger("tensorflow").addFilter(_not_a_retracing_notice)


@dataclass(frozen=True)
class DeviceInfo:
    device: str  # e.g. "GPU:0 (NVIDIA H100 80GB HBM3)", "2 x GPU (NVIDIA H100 80GB HBM3)" or "CPU"
    precision: str  # Keras' dtype policy: float32, mixed_float16 (GPUs) or mixed_bfloat16 (CPUs)
    jit_compile: bool | str  # Keras accepts "auto"
    # Build and compile the model in strategy.scope(); Keras then splits each global batch over the replicas.
    strategy: tf.distribute.Strategy = field(default_factory=tf.distribute.get_strategy)
    # The GPU ids this process was given (CUDA_VISIBLE_DEVICES when TensorFlow loaded: a sweep's worker's own,
    # or Ray's), "all" or "none"; see tfrexp.training.devices.
    visible_devices: str = field(default_factory=visible_devices)

    @property
    def mixed_precision(self) -> bool:
        return self.precision != "float32"

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    def as_params(self) -> dict:
        return {"device": self.device, "mixed_precision": self.mixed_precision, "precision": self.precision,
                "jit_compile": self.jit_compile, "replicas": self.replicas, "visible_devices": self.visible_devices}


def configure_device(mixed_precision: Toggle, jit_compile: Toggle,
                     distribution: Distribution = Distribution.none) -> DeviceInfo:
    """Pick the devices (every GPU under `mirrored`, or `auto` with several), and the precision policy; call
    before building the model, and build it in the returned strategy's scope."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        name = details.get("device_name", "unknown")
        # Tensor cores (compute capability >= 7.0) are what make float16 pay off.
        benefits = details.get("compute_capability", (0, 0)) >= (7, 0)
    else:
        # A CPU computes in bfloat16, not float16, and only its matrix units (AMX), which TensorFlow reaches
        # through oneDNN, make that pay off.
        name, benefits = "CPU", keras.backend.backend() == "tensorflow" and cpu_has_bfloat16_matrix_units()
    several = len(gpus) > 1 and keras.backend.backend() == "tensorflow"  # tf.distribute drives TensorFlow only
    mirrored = distribution is Distribution.mirrored or (distribution is Distribution.auto and several)
    if mirrored:
        # Without a GPU, the logical CPU devices (tf.config.set_logical_device_configuration) are the replicas.
        devices = [device.name for device in tf.config.list_logical_devices("GPU" if gpus else "CPU")]
        strategy = tf.distribute.MirroredStrategy(devices)
        device = f"{len(devices)} x {'GPU (' + name + ')' if gpus else 'CPU'}"
    else:
        strategy = tf.distribute.get_strategy()  # the default: one device
        device = f"GPU:0 ({name})" if gpus else "CPU"
    mixed = mixed_precision is Toggle.on or (mixed_precision is Toggle.auto and benefits)
    policy = ("mixed_float16" if gpus else "mixed_bfloat16") if mixed else "float32"
    keras.mixed_precision.set_global_policy(policy)
    jit = {Toggle.on: True, Toggle.off: False, Toggle.auto: "auto"}[jit_compile]
    info = DeviceInfo(device=device, precision=policy, jit_compile=jit, strategy=strategy)
    log.info("training on %s (%d replica%s, %s, jit_compile %s)", device, info.replicas,
             "" if info.replicas == 1 else "s", policy, jit)
    return info


def cpu_has_bfloat16_matrix_units() -> bool:
    """Whether this CPU has AMX-BF16 (Intel Xeon since Sapphire Rapids), where oneDNN runs TensorFlow's
    bfloat16 convolutions and matrix products: 1.4x the default's float32 training throughput on the 2-core
    machine (docs/benchmarks.md). Linux says so in /proc/cpuinfo; elsewhere, no. With oneDNN turned off
    (TF_ENABLE_ONEDNN_OPTS=0) TensorFlow does not use them, so no."""
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0":
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            return any(line.startswith("flags") and " amx_bf16" in line for line in cpuinfo)
    except OSError:
        return False


def compile_model(model: keras.Model, trainer: TrainerConfig, plan: FitPlan, device: DeviceInfo) -> None:
    if trainer.schedule == "cosine":
        warmup = int(trainer.warmup_fraction * plan.total_steps)
        learning_rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0,
            decay_steps=max(1, plan.total_steps - warmup),
            warmup_target=trainer.learning_rate,
            warmup_steps=warmup,
        )
    else:
        learning_rate = trainer.learning_rate
    if trainer.weight_decay > 0:
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=trainer.weight_decay, beta_1=trainer.beta_1,
                                           beta_2=trainer.beta_2)
    else:
        optimizer = keras.optimizers.Adam(learning_rate, beta_1=trainer.beta_1, beta_2=trainer.beta_2)
    if model.output_shape[-1] == 1:  # one logit: a binary (sigmoid) head
        loss = keras.losses.BinaryCrossentropy(from_logits=True)
        metric = keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)  # logit 0 = probability 0.5
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    model.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=[metric],
        jit_compile=device.jit_compile,
        steps_per_execution=trainer.steps_per_execution,
    )
    # Without a distribution strategy Keras leaves the optimizer's slots to the first trace of the training step,
    # and TensorFlow, seeing variables made there, traces the step a second time: built here, it is traced once
    # (the default's first fit reaches its end 0.5-0.9 s sooner, docs/benchmarks.md#start-up).
    model.optimizer.build(model.trainable_variables)


def fit(
    model: keras.Model,
    train: tf.data.Dataset,
    validation: tf.data.Dataset | None,
    plan: FitPlan,
    verbose: int,
    callbacks: list[keras.callbacks.Callback],
) -> dict[str, list[float]]:
    """Train; returns the per-epoch history (loss, accuracy and their val_ twins)."""
    history = model.fit(
        train,
        validation_data=validation,
        epochs=plan.epochs,
        steps_per_epoch=plan.steps_per_epoch,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,  # the pipeline shuffles; Keras would only warn that it cannot
    )
    return history.history


@dataclass(frozen=True)
class TestResult:
    metrics: dict[str, float]  # test_loss, test_accuracy
    labels: np.ndarray  # the true classes, in the order the batches came
    predictions: np.ndarray  # the predicted classes, in the same order


def evaluate(model: keras.Model, test: tf.data.Dataset) -> TestResult:
    """The test metrics and each example's (true, predicted) class from one pass over the split, so both come
    from the same batches in the same order (an unordered pipeline may order a second pass otherwise). The
    loss is the compiled one (Keras' compute_loss, with any regularization), averaged over examples as
    `model.evaluate` does; a pass of `model.evaluate` and a second one for the classes took 1.9 s of a default
    run, this one 0.8-0.95 s (docs/benchmarks.md#start-up)."""
    forward = _inference_call(model)
    labels, predictions, loss_sum = [], [], 0.0
    for images, batch_labels in test.as_numpy_iterator():  # NumPy: any Keras backend takes it
        logits = forward(images)
        loss = model.compute_loss(y=batch_labels, y_pred=logits, training=False)
        loss_sum += float(keras.ops.convert_to_numpy(loss)) * len(batch_labels)
        logits = keras.ops.convert_to_numpy(logits)
        predictions.append((logits[:, 0] > 0).astype(np.int64) if logits.shape[-1] == 1 else logits.argmax(-1))
        labels.append(batch_labels.astype(np.int64))
    labels, predictions = np.concatenate(labels), np.concatenate(predictions)
    metrics = {"test_accuracy": float((labels == predictions).mean()), "test_loss": loss_sum / len(labels)}
    log.info("test: %s", ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return TestResult(metrics, labels, predictions)


def _inference_call(model: keras.Model):
    """The model in inference mode, traced once under TensorFlow (called op by op it took twice as long). A
    plain call, not predict_on_batch: under a MirroredStrategy that hands every replica the whole batch and
    returns each replica's copy of the logits."""
    if keras.backend.backend() != "tensorflow":
        return lambda images: model(images, training=False)
    # No AutoGraph: a plain call has no Python control flow to rewrite (tfrexp/records/reader.py).
    return tf.function(lambda images: model(images, training=False), reduce_retracing=True, autograph=False)
