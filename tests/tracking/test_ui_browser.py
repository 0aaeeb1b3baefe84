"""The MLflow UI, in a real browser, over a store holding a small tfrexp sweep, shows what a person looks for:
the runs table lists the sweep's parent run and, once it is expanded, its children by name; comparing the
children shows the swept params with each run's value and each run's objective metric, val_accuracy."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest
from mlflow.tracking import MlflowClient
from playwright.sync_api import expect, sync_playwright

from helpers import free_port, run_tfrexp, stop_mlflow_server, wait_for

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
# Root in a container without a display, and no outside host: no background requests, updates, sync or QUIC.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
TIMEOUT_MS = 60_000  # a cold UI on a busy 2-core machine answers its first queries slowly
SWEPT = ["pipeline.batch_size", "trainer.learning_rate"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def page(tmp_path):
    """A page in the system's Chromium, with a fresh profile. CI installs Chromium (.ci/run), so none is a failure;
    the test asks for this fixture first, so that failure comes before the sweep's minute."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: the UI test drives the system's Chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            user_data_dir=tmp_path / "chromium-profile", executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1600, "height": 1200})
        try:
            context.set_default_timeout(TIMEOUT_MS)
            expect.set_options(timeout=TIMEOUT_MS)
            yield context.new_page()
        finally:
            context.close()


@pytest.fixture
def sweep(tmp_path):
    """A 2x2 sweep on tiny data, one epoch each, in a store of its own."""
    outputs = tmp_path / "outputs"
    result = run_tfrexp("-m", "pipeline.batch_size=64,128", "trainer.learning_rate=1e-3,3e-3", "trainer.epochs=1",
                        "model=cnn_small", "dataset.max_examples_per_split=300", "trainer.verbose=0",
                        "tracking.log_model=false", f"paths.output_dir={outputs}")
    assert result.returncode == 0, result.stderr[-3000:]
    store = outputs / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment_id = client.get_experiment_by_name("tfrexp").experiment_id
    runs = client.search_runs([experiment_id])
    [parent] = [run for run in runs if run.data.tags.get("sweep.role") == "parent"]
    children = {run.info.run_id: run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert len(children) == 4
    return SimpleNamespace(store=store, experiment_id=experiment_id, parent=parent, children=children)


@pytest.fixture
def mlflow_ui(sweep, tmp_path):
    """`mlflow ui` over the sweep's store on loopback, in a session of its own so that stopping it takes its
    workers too; its log goes to a file, as a pipe nobody reads would stall it once full."""
    port = free_port()
    log_path = tmp_path / "mlflow-ui.log"
    with open(log_path, "wb") as log:
        ui = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", f"sqlite:///{sweep.store}",
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"})
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: ui.poll() is not None or _answers(f"{uri}/health"), 90, "mlflow ui to answer /health")
        if ui.poll() is not None:
            pytest.fail(f"mlflow ui exited with {ui.returncode}: {log_path.read_text()[-3000:]}")
        yield uri
    finally:
        if ui.poll() is None:
            stop_mlflow_server(ui)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def _vertical_center(locator) -> float:
    box = locator.bounding_box()
    return box["y"] + box["height"] / 2


def test_the_ui_lists_the_sweep_and_compares_its_children(page, sweep, mlflow_ui, tmp_path):
    children = sweep.children
    names = {run_id: run.info.run_name for run_id, run in children.items()}

    # The runs table, not the GenAI view this MLflow opens an experiment on by default.
    page.goto(f"{mlflow_ui}/#/experiments/{sweep.experiment_id}/runs")
    parent = page.get_by_role("link", name=sweep.parent.info.run_name, exact=True)
    expect(parent).to_be_visible()
    child_links = {run_id: page.get_by_role("link", name=name, exact=True) for run_id, name in names.items()}
    for link in child_links.values():
        expect(link).to_have_count(0)  # children fold under their parent until it is expanded
    page.get_by_role("row").filter(has=parent).get_by_role("button").click()  # the expander, the row's one button
    for link in child_links.values():
        expect(link).to_be_visible()
    runs_table = tmp_path / "runs-table.png"
    page.screenshot(path=runs_table)

    # Select the children and compare them, as a person does; the UI puts the run ids in the URL.
    for link in child_links.values():
        row = page.get_by_role("row").filter(has=link)
        row.get_by_role("checkbox", name="toggle row selection").check()
    page.get_by_role("button", name="Compare", exact=True).click()
    page.wait_for_url(re.compile(r"/#/compare-runs\?"))
    query = parse_qs(urlsplit(urlsplit(page.url).fragment).query)
    columns = json.loads(query["runs"][0])  # the compare page's columns, in this order
    assert sorted(columns) == sorted(children) and json.loads(query["experiments"][0]) == [sweep.experiment_id]
    run_names = page.get_by_role("row").filter(has=page.get_by_role("rowheader", name="Run Name:", exact=True))
    expect(run_names.get_by_role("cell")).to_have_text([names[run_id] for run_id in columns])

    # "Show diff only" leaves exactly the swept params, each with every run's value.
    page.get_by_role("switch", name="Parameters - Show diff only").click()
    params = page.get_by_role("table").filter(has=page.get_by_role("rowheader", name=SWEPT[0], exact=True))
    expect(params.get_by_role("rowheader")).to_have_text(SWEPT)
    for key in SWEPT:
        row = params.get_by_role("row").filter(has=page.get_by_role("rowheader", name=key, exact=True))
        expect(row.get_by_role("cell")).to_have_text([children[run_id].data.params[key] for run_id in columns])

    # The metrics are two virtualized grids, 300 px high, names beside values; val_accuracy is below the fold.
    # Scrolling the values moves the names to where the values were one scroll event earlier (MLflow 3.17),
    # so after the wheel reaches the bottom a 1 px nudge back brings the names level with the values.
    metric_names = page.get_by_role("grid").filter(has=page.get_by_role("link"))
    metric_values = page.get_by_role("grid").filter(has_not=page.get_by_role("link"))
    metric_values.hover()
    page.mouse.wheel(0, 10_000)
    page.wait_for_function("grid => grid.scrollTop > 0 && grid.scrollTop + grid.clientHeight >= grid.scrollHeight",
                           arg=metric_values.element_handle())
    metric_values.hover()
    page.mouse.wheel(0, -1)
    page.wait_for_function("([names, values]) => Math.abs(names.scrollTop - values.scrollTop) <= 1",
                           arg=[metric_names.element_handle(), metric_values.element_handle()])
    objective = metric_names.get_by_role("link", name="val_accuracy", exact=True)
    expect(objective).to_be_visible()
    level = [cell for cell in metric_values.get_by_text(re.compile(r"\S")).all()
             if abs(_vertical_center(cell) - _vertical_center(objective)) < 10]
    shown = [float(cell.inner_text()) for cell in sorted(level, key=lambda cell: cell.bounding_box()["x"])]
    # The UI rounds metrics to 3 decimals.
    assert shown == pytest.approx([children[run_id].data.metrics["val_accuracy"] for run_id in columns], abs=5e-4)
    # Run names, swept params and metrics in one picture.
    page.get_by_role("button", name="Run details", exact=True).evaluate("header => header.scrollIntoView()")
    compare_page = tmp_path / "compare-runs.png"
    page.screenshot(path=compare_page)

    for screenshot in (runs_table, compare_page):
        assert screenshot.read_bytes()[:8] == PNG, screenshot
