"""One experiment, as a checklist: records -> pipeline -> model -> fit/evaluate, tracked in MLflow.

Takes the typed settings the entrypoint built; no Hydra config travels past this module's signature.
"""

from __future__ import annotations

import inspect
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import keras
import mlflow
import tensorflow as tf
from hydra.utils import get_method

from tfrexp import reports, tracking, training
from tfrexp.callbacks import EpochMetricsLogger, Interrupts, StopOnDivergence
from tfrexp.config import Config
from tfrexp.errors import ConfigError, RecordsError
from tfrexp.pipeline import ReadyTimes, build_dataset, fit_plan
from tfrexp.records.verify import bad_shards_message
from tfrexp.records.writer import ensure_records
from tfrexp.sweep import JobIdentity

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunContext:
    """What the entrypoint knows beyond the settings: names, the resolved config, where to put scratch."""

    resolved_config: dict
    config_yaml: str
    identity: JobIdentity  # run name, tags, parent run of a sweep
    run_dir: Path


def run(settings: Config, context: RunContext) -> float:
    """Run the experiment; returns the value of trainer.objective for a sweeper."""
    keras.utils.set_random_seed(settings.trainer.seed)
    build_model = model_builder(settings.model)
    experiment_id = tracking.connect(settings.tracking)
    identity = context.identity
    digest = tracking.config_digest(context.resolved_config)
    resume_id = tracking.find_interrupted_run(experiment_id, digest) if settings.trainer.resume else None
    if settings.trainer.resume:
        log.info("trainer.resume: %s", f"continuing run {resume_id}" if resume_id else "nothing to resume, new run")
    tags = {**identity.tags, "config.digest": digest}
    interrupts = Interrupts()  # Ctrl-C and SIGTERM end the run KILLED, never between logging and saving an epoch
    with interrupts.installed(), tracking.start_run(
        experiment_id, identity.run_name, tags, identity.parent_run_id, resume_id
    ) as active_run:
        if resume_id is None:  # a resumed run has them already
            tracking.log_config(context.resolved_config, context.config_yaml)
        records = ensure_records(settings.dataset, settings.writer, settings.paths.records_dir)
        manifest = records.manifest
        counts = {split: info.num_examples for split, info in manifest.splits.items()}
        tracking.log_records(records.directory, manifest, records.reused)
        for split in counts if resume_id is None else ():
            tracking.log_dataset(records.directory, manifest.dataset, manifest.fingerprint, split)

        device = training.configure_device(settings.trainer)
        mlflow.log_params({f"runtime.{key}": value for key, value in device.as_params().items()})
        plan = fit_plan(counts["train"], settings.pipeline, settings.trainer.epochs)
        cache_dir = context.run_dir / "tfdata-cache"
        ready = ReadyTimes()
        train = build_dataset(records.directory, manifest, "train", settings.pipeline, training=True,
                              seed=settings.trainer.seed, epochs=settings.trainer.epochs, cache_dir=cache_dir,
                              ready_times=ready)
        validation, test = (
            build_dataset(records.directory, manifest, split, settings.pipeline, training=False)
            if split in counts else None
            for split in ("validation", "test")
        )

        model = build_model(input_shape=manifest.image_shape, num_classes=len(manifest.class_names))
        training.compile_model(model, settings.trainer, plan, device)
        mlflow.log_text(_summary(model), "model_summary.txt")
        metrics = tracking.MetricBuffer()
        try:
            history, test_metrics = training.fit_and_evaluate(
                model, train, validation, test, plan, settings.trainer,
                callbacks=[
                    StopOnDivergence(),
                    interrupts.hold(),
                    EpochMetricsLogger(plan.examples_per_epoch, metrics, ready),
                    # Saves model and optimizer after every epoch; `trainer.resume=true` restores from here.
                    keras.callbacks.BackupAndRestore(str(Path(settings.paths.output_dir) / "backups"
                                                         / active_run.info.run_id)),
                    interrupts.release(),
                ],
            )
        except (tf.errors.DataLossError, tf.errors.FailedPreconditionError) as error:
            # TensorFlow names no file; reading the shards again finds the bad one(s) for the message.
            raise RecordsError(bad_shards_message(records.directory) or f"records unreadable ({error})") from None
        metrics.log(test_metrics)
        metrics.give_up(context.run_dir / "unsent_metrics.json", settings.tracking.uri)
        if test is not None:
            labels, predictions = training.predict_classes(model, test)
            confusion = reports.confusion_matrix(labels, predictions, len(manifest.class_names))
            tracking.log_report(history, confusion, manifest.class_names)
        if settings.tracking.log_model:
            example_images, _ = next(iter((test or validation or train).take(1)))
            tracking.log_model(model, example_images.numpy()[:8])
        shutil.rmtree(cache_dir, ignore_errors=True)
        objective = _objective(settings.trainer.objective, history, test_metrics)

    run_id = active_run.info.run_id
    print(f"records : {records.directory} ({'reused' if records.reused else 'written'})")
    print(f"run     : {run_id} ({identity.run_name}) in experiment '{settings.tracking.experiment}', {settings.tracking.uri}")
    print(f"ui      : {tracking.where_to_look(settings.tracking.uri, experiment_id, run_id)}")
    print(f"result  : " + ", ".join(f"{key}={value:.4f}" for key, value in test_metrics.items()))
    return objective


def model_builder(node: Any) -> Callable[..., keras.Model]:
    """The `_target_` function of the model config, bound to its arguments; bad arguments are a ConfigError."""
    arguments = dict(node)
    target = arguments.pop("_target_", None)
    if not target:
        raise ConfigError("model._target_ is missing: name a model builder function")
    try:
        function = get_method(target)
    except Exception as error:  # Hydra raises a bare Exception for an unimportable path
        raise ConfigError(f"model._target_={target!r}: cannot be imported ({error})") from None
    try:
        inspect.signature(function).bind(input_shape=[1, 1, 1], num_classes=2, **arguments)
    except TypeError as error:
        raise ConfigError(f"model ({target}): {error}") from None

    def build(input_shape: list[int], num_classes: int) -> keras.Model:
        return function(input_shape=input_shape, num_classes=num_classes, **arguments)

    return build


def _objective(name: str, history: dict[str, list[float]], test_metrics: dict[str, float]) -> float:
    if name in test_metrics:
        return test_metrics[name]
    if name in history:
        return float(history[name][-1])
    raise ConfigError(f"trainer.objective={name!r}: not a reported metric ({sorted([*history, *test_metrics])})")


def _summary(model: keras.Model) -> str:
    lines: list[str] = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    return "\n".join(lines)
