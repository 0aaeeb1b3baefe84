"""Everything MLflow: the store, the run's life cycle, params, per-epoch metrics and artifacts."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator
from urllib.parse import urlparse

import mlflow
import numpy as np
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from tfrexp.config.schema import TrackingConfig
from tfrexp.errors import TfrexpError
from tfrexp.records.manifest import Manifest

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

# MLflow 3 keeps an experiment's kind in this tag; ours are model training, not GenAI tracing.
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


class TrackingError(TfrexpError):
    """The tracking store cannot be reached or used."""


def connect(tracking: TrackingConfig) -> str:
    """Point MLflow at the store and make sure the experiment exists; returns its id. Done before any data
    work, so an unreachable server stops the run at once."""
    uri, parsed = tracking.uri, urlparse(tracking.uri)
    server = parsed.scheme in {"http", "https"}
    if parsed.scheme == "sqlite":
        # sqlite:///relative/path and sqlite:////absolute/path: make sure the folder exists.
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    elif server:
        _probe_server(uri)
        # MLflow's defaults retry a dead server for minutes per call; a user's own settings win.
        for name, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"), ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                            ("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")):
            os.environ.setdefault(name, value)
    mlflow.set_tracking_uri(uri)
    try:
        experiment = mlflow.get_experiment_by_name(tracking.experiment)
        if experiment is not None:
            if experiment.tags.get(EXPERIMENT_KIND) != MODEL_TRAINING:
                mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
            return experiment.experiment_id
        location = None if server else tracking.artifact_location  # a server keeps artifacts where told to
        if location and "://" not in location:
            location = Path(location).resolve().as_uri()
        try:
            return mlflow.create_experiment(tracking.experiment, artifact_location=location,
                                            tags={EXPERIMENT_KIND: MODEL_TRAINING})
        except MlflowException as error:  # another process created it first (mlflow issue 4123): use theirs
            if error.error_code == "RESOURCE_ALREADY_EXISTS":
                return mlflow.get_experiment_by_name(tracking.experiment).experiment_id
            raise
    except (MlflowException, OSError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TrackingError(f"tracking.uri={uri!r}: cannot reach the MLflow store ({first_line})") from None


def _probe_server(uri: str, timeout_s: float = 5.0) -> None:
    """One quick request, because MLflow's own client retries a dead server for minutes."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as response:
            response.read()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise TrackingError(f"tracking.uri={uri!r}: the MLflow server does not answer ({reason})") from None


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
    if resume_run_id:
        run = mlflow.start_run(run_id=resume_run_id, log_system_metrics=system_metrics)
        mlflow.set_tags({**tags, "resumed": "true", "error": ""})
    else:
        run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags,
                               log_system_metrics=system_metrics)
    try:
        yield run
    except KeyboardInterrupt:
        _end_run_reporting("interrupted", RunStatus.KILLED)
        raise
    except BaseException as error:
        _end_run_reporting(f"{type(error).__name__}: {error}", RunStatus.FAILED)
        raise
    else:
        mlflow.end_run(RunStatus.to_string(RunStatus.FINISHED))


def _end_run_reporting(message: str, status: int) -> None:
    """Record why the run ended; if the store itself is what failed, keep the original error visible."""
    try:
        mlflow.set_tag("error", message[:5000])
        if status == RunStatus.FAILED:
            mlflow.log_text(message, "error.txt")
        mlflow.end_run(RunStatus.to_string(status))
    except MlflowException as store_error:
        log.error("could not mark the run %s in MLflow: %s", RunStatus.to_string(status), store_error)


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


def log_config(resolved: dict, yaml_text: str) -> None:
    mlflow.log_params(flatten(resolved))
    mlflow.log_text(yaml_text, "config.yaml")


def log_records(directory: Path, manifest: Manifest, reused: bool) -> None:
    """Which record version the run used, its counts, its manifest, and every file the writer skipped."""
    mlflow.set_tags({"records.fingerprint": manifest.fingerprint, "records.reused": str(reused).lower()})
    mlflow.log_params({f"records.num_examples.{split}": info.num_examples for split, info in manifest.splits.items()})
    mlflow.log_params({"records.directory": str(directory), "records.skipped": len(manifest.skipped)})
    mlflow.log_artifact(str(directory / "manifest.json"))
    if manifest.skipped:
        mlflow.log_dict({"files_found": manifest.files_found, "skipped": manifest.skipped}, "skipped_files.json")


class MetricBuffer:
    """Logs metrics; values the store does not take (it went away) are kept and retried with the next call.

    On every way out of a run, `keep()` writes what still did not get through to `path` (nothing is dropped
    silently), and a buffer made for the same run later (trainer.resume=true) sends what that file holds
    first."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._pending: list[tuple[dict[str, float], int]] = []
        self._warned = False
        if path is not None and path.is_file():
            self._pending = [(entry["metrics"], entry["step"]) for entry in json.loads(path.read_text())]
            log.info("sending %d sets of metric values an earlier attempt of this run kept in %s",
                     len(self._pending), path)
            self.keep()

    def log(self, metrics: dict[str, float], step: int = 0) -> None:
        self._pending.append((metrics, step))
        self.flush()

    def flush(self) -> None:
        while self._pending:
            metrics, step = self._pending[0]
            try:
                mlflow.log_metrics(metrics, step=step)
            except (MlflowException, OSError) as error:
                if not self._warned:
                    log.warning("the MLflow store does not take metrics (%s); keeping them to retry",
                                str(error).splitlines()[0][:300])
                    self._warned = True
                return
            self._pending.pop(0)

    def unsent(self) -> list[dict]:
        self.flush()
        return [{"step": step, "metrics": metrics} for metrics, step in self._pending]

    def keep(self) -> list[dict]:
        """Retry once more, then write what is still unsent to `path` (and remove a file that is all sent)."""
        unsent = self.unsent()
        if self.path is not None:
            if unsent:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.write_text(json.dumps(unsent, indent=2))
            else:
                self.path.unlink(missing_ok=True)
        return unsent

    def give_up(self, tracking_uri: str) -> None:
        """Raise if some values never reached the store, after writing them to `path`."""
        unsent = self.keep()
        if unsent:
            raise TrackingError(
                f"the MLflow store {tracking_uri} stopped answering during the run: {len(unsent)} sets of metric "
                f"values were not stored; they are in {self.path} (training itself finished; trainer.resume=true "
                "sends them)")


# The SQL store looks a dataset up, then inserts it: parallel runs that log the same dataset race on its
# unique key. How SQLite, PostgreSQL (where two such inserts may also deadlock) and MySQL word the race:
DATASET_RACE = ("UNIQUE constraint failed", "UniqueViolation", "deadlock detected", "Duplicate entry")


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


def log_report(history: dict[str, list[float]], labels: np.ndarray, predictions: np.ndarray,
               class_names: list[str]) -> None:
    """Learning curves and the test confusion matrix as PNGs, per-class test accuracy as JSON."""
    from tfrexp import reports

    import matplotlib.pyplot as plt

    confusion = reports.confusion_matrix(labels, predictions, len(class_names))
    for figure, name in ((reports.learning_curves_figure(history), "learning_curves.png"),
                         (reports.confusion_figure(confusion, class_names), "confusion_matrix.png")):
        mlflow.log_figure(figure, name)
        plt.close(figure)  # pyplot keeps every figure until closed: a long sweep in one process would grow
    mlflow.log_dict(reports.per_class_accuracy(confusion, class_names), "per_class_accuracy.json")


def log_model(model: keras.Model, example_images: np.ndarray) -> None:
    """The trained model in the Keras flavour, loadable with mlflow.pyfunc.load_model, with a signature."""
    import keras
    import tensorflow as tf

    signature = infer_signature(example_images, model.predict(example_images, verbose=0))
    mlflow.keras.log_model(
        model,
        name="model",
        signature=signature,
        # Naming the requirements skips MLflow's inference, which reloads the model in a subprocess.
        pip_requirements=[f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"],
    )


DEFAULT_STORE = "sqlite:///outputs/mlflow.db"  # what `make ui` serves


def where_to_look(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """How to open a run: the server itself for http stores, else the local UI and the command that starts it."""
    page = f"#/experiments/{experiment_id}/runs/{run_id}"
    if tracking_uri.startswith("http"):
        return f"{tracking_uri.rstrip('/')}/{page}"
    command = "make ui" if tracking_uri == DEFAULT_STORE else f"mlflow ui --backend-store-uri {tracking_uri}"
    return f"`{command}`, then http://127.0.0.1:5000/{page}"
