"""One experiment, as a checklist: records -> pipeline -> model -> fit/evaluate, tracked in MLflow.

Takes the typed settings and a source the entrypoint built; no Hydra config travels past this module's
signature. Returns a `RunResult`, which the CLI prints, the Python API returns and the benchmark reads.
"""

from __future__ import annotations

import inspect
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import keras
import tensorflow as tf
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from tfrexp.config.schema import OBJECTIVES, Config, objective_split
from tfrexp.errors import ConfigError, DataError, RecordsError, first_line
from tfrexp.pipeline import ReadyTimes, build_dataset, fit_plan
from tfrexp.records.examples import ExampleSource
from tfrexp.records.verify import bad_shards_message
from tfrexp.records.writer import ensure_records
from tfrexp.run_context import RunContext
from tfrexp.tracking.run import tracked_run
from tfrexp.tracking.store import where_to_look
from tfrexp.training import fit
from tfrexp.training.callbacks import EpochMetricsLogger, Interrupts, training_callbacks


@dataclass(frozen=True)
class RunResult:
    """What a finished run produced and where to find it."""

    run_id: str
    run_name: str
    experiment: str
    experiment_id: str
    tracking_uri: str
    test_metrics: dict[str, float]
    objective: float  # the value of trainer.objective
    records_dir: Path
    records_reused: bool
    fit_seconds: float  # Keras fit alone: training and validation epochs
    startup_seconds: float | None  # from the job's start (run_context.job_start) to the end of the first step

    def summary(self) -> str:
        """The lines the `tfrexp` command ends with."""
        return "\n".join([
            f"records : {self.records_dir} ({'reused' if self.records_reused else 'written'})",
            f"run     : {self.run_id} ({self.run_name}) in experiment '{self.experiment}', {self.tracking_uri}",
            f"ui      : {where_to_look(self.tracking_uri, self.experiment_id, self.run_id)}",
            "result  : " + (", ".join(f"{key}={value:.4f}" for key, value in self.test_metrics.items())
                            or f"objective {self.objective:.4f} (no test metrics: no test split, or pruned)"),
        ])


def run(settings: Config, source: ExampleSource, context: RunContext) -> RunResult:
    """Run the experiment inside one tracked run, which ends FINISHED, FAILED or KILLED whatever happens."""
    keras.utils.set_random_seed(settings.trainer.seed)
    build_model = model_builder(settings.model)
    output_dir = Path(settings.paths.output_dir)
    backups = output_dir / "backups"  # Keras' BackupAndRestore: one folder per run id
    interrupts = Interrupts()  # Ctrl-C and SIGTERM end the run KILLED, never between logging and saving an epoch
    with interrupts.installed(), tracked_run(
        settings.tracking, context.identity, context.resolved_config, context.config_yaml,
        resume_backups=backups if settings.trainer.resume else None, unsent_dir=output_dir / "unsent",
    ) as tracked:
        records = ensure_records(source, settings.writer, settings.paths.records_dir)
        manifest = records.manifest
        tracked.log_records(records.directory, manifest, records.reused)

        if "train" not in manifest.splits:
            raise DataError(f"dataset {manifest.dataset}: no 'train' split to train on (it has "
                            f"{sorted(manifest.splits)}); check dataset.source")
        _check_objective(settings.trainer.objective, manifest.splits)
        device = fit.configure_device(settings.trainer.mixed_precision, settings.trainer.jit_compile,
                                      settings.trainer.distribution)
        tracked.log_params({f"runtime.{key}": value for key, value in device.as_params().items()})
        plan = fit_plan(manifest.splits["train"].num_examples, settings.pipeline, settings.trainer.epochs)
        cache_dir = context.run_dir / "tfdata-cache"
        ready = ReadyTimes()
        train = build_dataset(records.directory, manifest, "train", settings.pipeline, training=True,
                              seed=settings.trainer.seed, epochs=settings.trainer.epochs, cache_dir=cache_dir,
                              ready_times=ready)
        evaluation = {split: build_dataset(records.directory, manifest, split, settings.pipeline, training=False,
                                           cache_dir=cache_dir)
                      for split in ("validation", "test") if split in manifest.splits}

        with device.strategy.scope():
            model = build_model(input_shape=manifest.image_shape, num_classes=len(manifest.class_names))
            fit.compile_model(model, settings.trainer, plan, device)
        tracked.log_text(_summary(model), "model_summary.txt")
        # Values the store does not take are kept; on any way out they are written to a file, which the next
        # run against the store sends.
        metrics = tracked.metric_buffer()
        logger = EpochMetricsLogger(plan.examples_per_epoch, metrics, ready, started=context.started)
        # A resumed run's divergence check starts from where it left off (its first batch may be the explosion).
        callbacks = training_callbacks(interrupts, logger, backups / tracked.run_id,
                                       resumed_loss=tracked.last_logged("loss") if tracked.resumed else None)
        trial = None
        if settings.search.trial is not None:  # a search's trial: reports every epoch, stops when pruned
            from tfrexp.search.trial import ReportToStudy

            trial = ReportToStudy(settings.search, settings.trainer.objective, settings.trainer.epochs)
            callbacks.append(trial)  # last: a pruned trial's final epoch is logged and saved first
        fit_started = time.perf_counter()
        try:
            history = fit.fit(model, train, evaluation.get("validation"), plan, settings.trainer.verbose, callbacks)
            fit_seconds = time.perf_counter() - fit_started
            # A pruned trial is done with: its search needs no test figures, report or model of it.
            trained_out = trial is None or trial.pruned_at_epoch is None
            test = fit.evaluate(model, evaluation["test"]) if "test" in evaluation and trained_out else None
            test_metrics = test.metrics if test is not None else {}
            metrics.log({**test_metrics, "fit_seconds": fit_seconds})
        except (tf.errors.DataLossError, tf.errors.FailedPreconditionError, tf.errors.NotFoundError,
                tf.errors.InvalidArgumentError) as error:
            metrics.keep()
            # TensorFlow names no file; reading the shards again finds the bad one(s) for the message.
            message = bad_shards_message(records.directory)
            if message is None and isinstance(error, (tf.errors.NotFoundError, tf.errors.InvalidArgumentError)):
                raise  # not the records' fault
            raise RecordsError(message or f"records unreadable ({first_line(error)})") from None
        except BaseException:  # Ctrl-C, SIGTERM, a diverging loss, ...
            metrics.keep()
            raise
        metrics.give_up(settings.tracking.uri)
        if trial is not None:
            tracked.set_tags({"search.pruned": str(trial.pruned_at_epoch is not None).lower()})
            if trial.pruned_at_epoch is not None:
                tracked.log_params({"search.pruned_at_epoch": trial.pruned_at_epoch})
        if test is not None:
            tracked.log_report(history, test.labels, test.predictions, manifest.class_names)
        if settings.tracking.log_model and trained_out:
            sample = evaluation["test"] if "test" in evaluation else train
            example_images, _ = next(iter(sample.take(1)))
            tracked.log_model(model, example_images.numpy()[:8])
        shutil.rmtree(cache_dir, ignore_errors=True)
        objective = _objective(settings.trainer.objective, history, test_metrics)
        interrupts.raise_received()  # a signal whose exception Python dropped still ends the run KILLED

    return RunResult(run_id=tracked.run_id, run_name=context.identity.run_name,
                     experiment=settings.tracking.experiment, experiment_id=tracked.experiment_id,
                     tracking_uri=settings.tracking.uri, test_metrics=test_metrics, objective=objective,
                     records_dir=records.directory, records_reused=records.reused, fit_seconds=fit_seconds,
                     startup_seconds=logger.startup_seconds)


def model_builder(model_settings: Any) -> Callable[..., keras.Model]:
    """The `_target_` function of the model config with its arguments bound (Hydra's `_partial_`); it is
    called with the dataset's `input_shape` and `num_classes`. A bad target or argument is a ConfigError."""
    if not isinstance(model_settings, dict) or not model_settings.get("_target_"):
        raise ConfigError("model._target_ is missing: name a model builder function")
    try:
        build = instantiate(model_settings, _partial_=True)
    except InstantiationException as error:
        raise ConfigError(f"model._target_={model_settings['_target_']!r}: {first_line(error)}") from None
    target = model_settings["_target_"]
    try:  # the arguments, checked now rather than when the model is built
        inspect.signature(build.func).bind(input_shape=[1, 1, 1], num_classes=2, **build.keywords)
    except TypeError as error:
        raise ConfigError(f"model ({target}): {error}") from None

    def build_checked(**shape: Any) -> keras.Model:
        try:
            return build(**shape)
        except ConfigError:
            raise  # the builder's own, naming its key
        except (ValueError, TypeError) as error:  # a value Keras refuses (a dropout rate of 1.5, say)
            arguments = ", ".join(f"model.{key}={value!r}" for key, value in build.keywords.items())
            raise ConfigError(f"model ({target}; {arguments or 'its defaults'}): {first_line(error)}") from None

    return build_checked


def _check_objective(objective: str, splits: dict) -> None:
    """Before training: the objective's split exists (with dataset.validation_fraction=0 and no validation
    split of its own, the default val_accuracy was found missing only once the run had trained and tested)."""
    if objective_split(objective) not in splits:
        possible = [name for name in OBJECTIVES if objective_split(name) in splits]
        raise ConfigError(f"trainer.objective={objective!r}: the records have no {objective_split(objective)} split "
                          f"(they have {', '.join(splits)}); choose one of {', '.join(possible)}")


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
