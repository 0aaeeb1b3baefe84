"""The MLflow store: connecting to it (a SQLite file or a server), the experiment, reading runs back, and
where a person looks at a run."""

from __future__ import annotations

import contextlib
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
from mlflow.exceptions import MlflowException

from tfrexp.config.schema import TrackingConfig
from tfrexp.errors import TfrexpError, first_line

log = logging.getLogger(__name__)

# MLflow 3 keeps an experiment's kind in this tag; ours are model training, not GenAI tracing.
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"

DEFAULT_STORE = "sqlite:///outputs/mlflow.db"  # what `make ui` serves


class TrackingError(TfrexpError):
    """The tracking store cannot be reached or used."""


def connect(tracking: TrackingConfig) -> str:
    """Point MLflow at the store and make sure the experiment exists; returns its id. Done before any data
    work, so an unreachable server stops the run at once."""
    uri, parsed = tracking.uri, urlparse(tracking.uri)
    server = parsed.scheme in {"http", "https"}
    if parsed.scheme == "sqlite":
        # sqlite:///relative/path and sqlite:////absolute/path: make sure the folder exists.
        folder = Path(uri[len("sqlite:///"):]).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise TrackingError(f"tracking.uri={uri!r}: cannot create the store's folder {folder} "
                                f"({error.strerror or error})") from None
    elif server:
        _probe_server(uri)
        # MLflow's defaults retry a dead server for minutes per call; a user's own settings win.
        for name, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"), ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                            ("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")):
            os.environ.setdefault(name, value)
    mlflow.set_tracking_uri(uri)
    try:
        with _tables_made_said_once(uri):
            experiment = mlflow.get_experiment_by_name(tracking.experiment)
        if experiment is not None and experiment.lifecycle_stage == "deleted":
            raise TrackingError(
                f"tracking.experiment={tracking.experiment!r} was deleted (in the MLflow UI or its API): restore it "
                f"with `MLFLOW_TRACKING_URI={uri} mlflow experiments restore --experiment-id "
                f"{experiment.experiment_id}`, or name another one with tracking.experiment=<name>")
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
        raise TrackingError(f"tracking.uri={uri!r}: cannot reach the MLflow store ({first_line(error)})") from None


class _TablesMade(logging.Filter):
    """Keeps back MLflow's two INFO lines about making a new SQL store's tables ("Creating initial MLflow
    database tables...", then "Updating database tables", which reads like a migration of something that was
    there) and notes when the first came."""

    MESSAGES = ("Creating initial MLflow database tables", "Updating database tables")

    def __init__(self) -> None:
        super().__init__()
        self.started: float | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(self.MESSAGES[0]):
            self.started = time.time()
        return not message.startswith(self.MESSAGES)


@contextlib.contextmanager
def _tables_made_said_once(uri: str):
    """MLflow's first call on a SQL store that has no tables yet makes them (about 1 s for SQLite here); one
    line of ours says so instead of MLflow's two."""
    made = _TablesMade()
    migrations = logging.getLogger("mlflow.store.db.utils")
    migrations.addFilter(made)
    try:
        yield
    finally:
        migrations.removeFilter(made)
    if made.started is not None:
        password = urlparse(uri).password  # a database URI may carry one: not for the log
        shown = uri.replace(f":{password}@", ":***@") if password else uri
        log.info("new MLflow store %s: its tables made in %.1f s", shown, time.time() - made.started)


def _probe_server(uri: str, timeout_s: float = 5.0) -> None:
    """One quick request, because MLflow's own client retries a dead server for minutes."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as response:
            response.read()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise TrackingError(f"tracking.uri={uri!r}: the MLflow server does not answer ({reason})") from None


def where_to_look(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """How to open a run: the server itself for http stores, else the local UI and the command that starts it."""
    page = f"#/experiments/{experiment_id}/runs/{run_id}"
    if tracking_uri.startswith("http"):
        return f"{tracking_uri.rstrip('/')}/{page}"
    in_checkout = Path.cwd() == Path(__file__).resolve().parents[2] and Path("Makefile").is_file()
    # `make ui` is the checkout's Makefile target: from any other folder (a user's project) it does not exist.
    command = ("make ui" if tracking_uri == DEFAULT_STORE and in_checkout
               else f"mlflow ui --backend-store-uri {tracking_uri}")
    return f"`{command}`, then http://127.0.0.1:5000/{page}"


def run_metrics(tracking_uri: str, run_id: str) -> dict[str, float]:
    """The latest value of each metric of a run."""
    return mlflow.MlflowClient(tracking_uri).get_run(run_id).data.metrics


def latest_run(tracking_uri: str, experiment: str, run_name: str | None = None) -> Any:
    """The most recently started run of an experiment (of that name, if given), as an MLflow `Run`."""
    client = mlflow.MlflowClient(tracking_uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    name_filter = f"attributes.run_name = '{run_name}'" if run_name else ""
    [latest] = client.search_runs([experiment_id], filter_string=name_filter,
                                  order_by=["attributes.start_time DESC"], max_results=1)
    return latest


def children(tracking_uri: str, experiment_id: str, parent_run_id: str) -> list:
    """Every child run of a parent run (a sweep's jobs), as MLflow `Run`s, page after page (a search returns
    1,000 at most)."""
    client, runs, token = mlflow.MlflowClient(tracking_uri), [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
                                  page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def latest_sweep_children(tracking_uri: str, experiment: str) -> list:
    """The child runs of the experiment's most recent sweep."""
    client = mlflow.MlflowClient(tracking_uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    [parent] = client.search_runs([experiment_id], "tags.`sweep.role` = 'parent'",
                                  order_by=["attributes.start_time DESC"], max_results=1)
    return children(tracking_uri, experiment_id, parent.info.run_id)
