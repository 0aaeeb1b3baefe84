"""examples/quickstart.ipynb runs headless from top to bottom on a slice of the real MNIST."""

from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient

from helpers import REPO

pytestmark = pytest.mark.slow

NOTEBOOK = REPO / "examples" / "quickstart.ipynb"


def test_the_quickstart_notebook_runs_and_shows_the_plots(tmp_path, data_dir, monkeypatch):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), "outputs cleared"
    monkeypatch.setenv("TFREXP_OUTPUT_DIR", str(tmp_path / "outputs"))
    monkeypatch.setenv("TFREXP_DATA_DIR", str(data_dir))
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}},
                   env=dict(os.environ)).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    text = "".join(output.get("text", "") for output in outputs)
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(images) == 2, "the learning curves and the confusion matrix"
    assert "result  : test_accuracy=" in text and "batch: (64, 28, 28, 1) uint8" in text
    assert (tmp_path / "outputs" / "mlflow.db").is_file()
