"""One tracked run's life: started or resumed, what it logs, and its end with a true status (FINISHED, FAILED
with the reason, KILLED), whatever raised inside it."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import mlflow
import numpy as np
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException

from tfrexp import stop_signals
from tfrexp.config.schema import TrackingConfig
from tfrexp.records.manifest import Manifest
from tfrexp.tracking.metrics import UNSENT_FILE, MetricBuffer, send_unsent
from tfrexp.tracking.names import JobIdentity
from tfrexp.tracking.store import connect

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

# The SQL store looks a dataset up, then inserts it: parallel runs that log the same dataset race on its
# unique key. How SQLite, PostgreSQL (where two such inserts may also deadlock) and MySQL word the race:
DATASET_RACE = ("UNIQUE constraint failed", "UniqueViolation", "deadlock detected", "Duplicate entry")


class TrackedRun:
    """The run in progress: everything an experiment logs goes through here, none of it broken into by a stop
    signal (tfrexp.stop_signals.deferred: it stops the run once the write is done)."""

    def __init__(self, run_id: str, experiment_id: str, resumed: bool, unsent_dir: Path | None = None) -> None:
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.resumed = resumed  # a resumed run logged its config and inputs the first time
        self.unsent_dir = unsent_dir

    @stop_signals.deferred()
    def log_params(self, params: dict[str, Any]) -> None:
        if self.resumed:
            # A param cannot change; a resumed run may run elsewhere (another GPU, another machine). The first
            # value stays the param, what this part ran with is the tag `resumed.<key>`.
            logged = mlflow.get_run(self.run_id).data.params
            changed = {key: value for key, value in params.items() if key in logged and logged[key] != str(value)}
            if changed:
                mlflow.set_tags({f"resumed.{key}": value for key, value in changed.items()})
            params = {key: value for key, value in params.items() if key not in changed}
        mlflow.log_params(params)

    @stop_signals.deferred()
    def last_logged(self, key: str) -> float | None:
        """The metric's value at the run's latest step (a resumed run's last finished epoch), if it has one."""
        return mlflow.get_run(self.run_id).data.metrics.get(key)

    @stop_signals.deferred()
    def log_metrics(self, metrics: dict[str, float]) -> None:
        mlflow.log_metrics(metrics)

    @stop_signals.deferred()
    def set_tags(self, tags: dict[str, str]) -> None:
        mlflow.set_tags(tags)

    @stop_signals.deferred()
    def log_text(self, text: str, name: str) -> None:
        mlflow.log_text(text, name)

    @stop_signals.deferred()
    def log_dict(self, values: dict, name: str) -> None:
        mlflow.log_dict(values, name)

    @stop_signals.deferred()
    def log_config(self, resolved: dict, yaml_text: str) -> None:
        mlflow.log_params(flatten(resolved))
        mlflow.log_text(yaml_text, "config.yaml")

    def metric_buffer(self) -> MetricBuffer:
        """Per-epoch metrics for this run; what the store does not take ends up in
        `<unsent_dir>/<run id>/unsent_metrics.json`, which the next run against the store sends."""
        return MetricBuffer(self.unsent_dir / self.run_id / UNSENT_FILE if self.unsent_dir else None)

    @stop_signals.deferred()
    def log_records(self, directory: Path, manifest: Manifest, reused: bool) -> None:
        """Which record version the run used, its counts, its manifest, every file the writer skipped, and
        (on a new run) the splits as the run's datasets."""
        mlflow.set_tags({"records.fingerprint": manifest.fingerprint, "records.reused": str(reused).lower()})
        mlflow.log_params({f"records.num_examples.{split}": info.num_examples
                           for split, info in manifest.splits.items()})
        mlflow.log_params({"records.directory": str(directory), "records.skipped": len(manifest.skipped)})
        mlflow.log_artifact(str(directory / "manifest.json"))
        if manifest.skipped:
            mlflow.log_dict({"files_found": manifest.files_found, "skipped": manifest.skipped}, "skipped_files.json")
        if not self.resumed:
            log_datasets(directory, manifest.dataset, manifest.fingerprint, list(manifest.splits))

    @stop_signals.deferred()
    def log_report(self, history: dict[str, list[float]], labels: np.ndarray, predictions: np.ndarray,
                   class_names: list[str]) -> None:
        """Learning curves and the test confusion matrix as PNGs, per-class test accuracy as JSON."""
        import matplotlib.pyplot as plt

        from tfrexp.tracking import reports

        confusion = reports.confusion_matrix(labels, predictions, len(class_names))
        for figure, name in ((reports.learning_curves_figure(history), "learning_curves.png"),
                             (reports.confusion_figure(confusion, class_names), "confusion_matrix.png")):
            mlflow.log_figure(figure, name)
            plt.close(figure)  # pyplot keeps every figure until closed: a long sweep in one process would grow
        mlflow.log_dict(reports.per_class_accuracy(confusion, class_names), "per_class_accuracy.json")

    @stop_signals.deferred()
    def log_model(self, model: keras.Model, example_images: np.ndarray) -> None:
        """The trained model in the Keras flavour, loadable with mlflow.pyfunc.load_model, with a signature."""
        import keras
        import tensorflow as tf
        from mlflow.models import infer_signature

        # A plain call: model.predict would build a tf.data pipeline and trace a predict step for 8 images.
        outputs = keras.ops.convert_to_numpy(model(example_images, training=False))
        signature = infer_signature(example_images, outputs)
        mlflow.keras.log_model(
            model,
            name="model",
            signature=signature,
            # Naming the requirements skips MLflow's inference, which reloads the model in a subprocess.
            pip_requirements=[f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"],
        )


@contextmanager
def tracked_run(tracking: TrackingConfig, identity: JobIdentity, resolved_config: dict | None = None,
                config_yaml: str = "", resume_backups: Path | None = None,
                unsent_dir: Path | None = None) -> Iterator[TrackedRun]:
    """Connect to the store and run the block inside one MLflow run, which ends FINISHED, FAILED (with the
    error as a tag and a text artifact) or KILLED. The run is tagged with its config's digest; with
    `resume_backups` (trainer.resume=true) the latest interrupted run of the same config that has a Keras
    backup there is reopened and continued instead of a new one. Metric values earlier runs could not send
    are in `unsent_dir`: they are sent first."""
    with stop_signals.deferred():
        experiment_id = connect(tracking)
        if unsent_dir is not None and unsent_dir.is_dir():
            send_unsent(unsent_dir, tracking.uri)
        tags, resume_id = dict(identity.tags), None
        if resolved_config is not None:
            tags["config.digest"] = digest = config_digest(resolved_config)
            if resume_backups is not None:
                resume_id = run_to_resume(experiment_id, digest, resume_backups)
    with start_run(experiment_id, identity.run_name, tags, identity.parent_run_id, resume_id,
                     tracking.system_metrics) as active:
        run = TrackedRun(active.info.run_id, experiment_id, resumed=resume_id is not None, unsent_dir=unsent_dir)
        if resolved_config is not None and not run.resumed:
            run.log_config(resolved_config, config_yaml)
        yield run


@contextmanager
def start_run(
    experiment_id: str, run_name: str, tags: dict[str, str], parent_run_id: str | None = None,
    resume_run_id: str | None = None, system_metrics: bool = False,
) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run that ends FINISHED, FAILED (with the error as a tag and a text artifact) or KILLED.

    With resume_run_id, that earlier run is reopened and continued instead."""
    if parent_run_id:
        tags = {**tags, "mlflow.parentRunId": parent_run_id}
    if system_metrics:
        # A sample every second, logged as taken: a 20 s run gets ~20 points of CPU, memory (and GPU) use.
        mlflow.set_system_metrics_sampling_interval(1)
        mlflow.set_system_metrics_samples_before_logging(1)
        # Its start/stop/"no GPU" lines would repeat in every run's output; warnings still show.
        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    run = None
    try:
        with stop_signals.deferred():  # a signal meanwhile is raised once the run exists, and ends it KILLED
            if resume_run_id:
                run = mlflow.start_run(run_id=resume_run_id, log_system_metrics=system_metrics)
                mlflow.set_tags({**tags, "resumed": "true", "error": ""})
            else:
                run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags,
                                       log_system_metrics=system_metrics)
        yield run
    except KeyboardInterrupt:
        if run is not None:
            _end_run_reporting("interrupted", RunStatus.KILLED)
        raise
    except BaseException as error:
        if run is not None:
            _end_run_reporting(f"{type(error).__name__}: {error}", RunStatus.FAILED)
        raise
    else:
        with stop_signals.deferred():
            mlflow.end_run(RunStatus.to_string(RunStatus.FINISHED))


@stop_signals.deferred()
def _end_run_reporting(message: str, status: int) -> None:
    """Record why the run ended, then end it; if the store itself is what failed, keep the original error
    visible, and still end the run in this process, so that the next run here can start.

    A run that something else has already ended keeps that account: a sweep's driver ends the run of a job it
    cannot reach (on a Ray worker) with the sweep's reason, and Ray stops that worker only after the driver has
    left, when its own "interrupted" would overwrite the sweep's reason, or not, as the worker's grace lasts."""
    try:
        recorded = mlflow.get_run(mlflow.active_run().info.run_id).info.status
        if recorded == "RUNNING":
            recorded = None
            mlflow.set_tag("error", message[:5000])
            if status == RunStatus.FAILED:
                mlflow.log_text(message, "error.txt")
    except (MlflowException, OSError) as store_error:
        recorded = None
        log.error("could not record in MLflow why the run ended: %s", store_error)
    ending = recorded or RunStatus.to_string(status)
    try:
        mlflow.end_run(ending)  # leaves the process's active runs first, then the store
    except (MlflowException, OSError) as store_error:
        log.error("could not mark the run %s in MLflow: %s", ending, store_error)


def config_digest(resolved: dict) -> str:
    """Names a config for resuming: the resolved values, without trainer.resume itself."""
    trimmed = {**resolved, "trainer": {k: v for k, v in resolved.get("trainer", {}).items() if k != "resume"}}
    return hashlib.sha256(json.dumps(trimmed, sort_keys=True, default=str).encode()).hexdigest()[:16]


def find_interrupted_run(experiment_id: str, digest: str) -> str | None:
    """The latest KILLED or FAILED run of this config, to resume."""
    runs = mlflow.search_runs(
        [experiment_id], filter_string=f"tags.`config.digest` = '{digest}'",
        order_by=["attributes.start_time DESC"], output_format="list", max_results=20,
    )
    for run in runs:
        if run.info.status in {"KILLED", "FAILED"}:
            return run.info.run_id
    return None


def run_to_resume(experiment_id: str, digest: str, backups: Path) -> str | None:
    """The latest interrupted run of this config, if it has a backup to resume from; else None, saying why."""
    run_id = find_interrupted_run(experiment_id, digest)
    if run_id is None:
        log.info("trainer.resume: no interrupted run of this config; starting a new run")
        return None
    if not (backups / run_id).is_dir() or not any((backups / run_id).iterdir()):
        log.warning("trainer.resume: run %s has no backup to resume from (it ended after training); starting a new "
                    "run", run_id)
        return None
    log.info("trainer.resume: continuing run %s from its last finished epoch", run_id)
    return run_id


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}, "c": [1, 2]} -> {"a.b": 1, "c": "1, 2"}: every leaf under its dotted key, a list as
    one readable line (the UI's compare page then shows one row for it)."""
    if isinstance(tree, dict):
        flat = {}
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    if isinstance(tree, (list, tuple)):
        return {prefix.rstrip("."): ", ".join(str(item) for item in tree)}
    return {prefix.rstrip("."): tree}


def log_datasets(directory: Path, name: str, fingerprint: str, splits: list[str]) -> None:
    """Record what the run trained on (the UI's dataset column), every split in one call; the digest is the
    manifest's fingerprint, so nothing iterates the data to compute one."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource

    source = LocalArtifactDatasetSource(str(directory))
    datasets = [MetaDataset(source, name=f"{name}-{split}", digest=fingerprint) for split in splits]
    contexts = ["training" if split == "train" else split for split in splits]
    for attempt in range(4):
        try:
            mlflow.log_inputs(datasets=datasets, contexts=contexts, tags_list=[None] * len(datasets))
            return
        except MlflowException as error:  # the loser of the race retries, finds the row and links to it
            if not any(words in str(error) for words in DATASET_RACE) or attempt == 3:
                raise
            time.sleep(random.uniform(0.05, 0.25) * (attempt + 1))  # apart, so the retries do not meet again
