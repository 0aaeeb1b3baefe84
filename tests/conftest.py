"""Shared fixtures: the real MNIST files from TFREXP_DATA_DIR, and settings that compose the real conf/."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from helpers import compose_config
from tfrexp import config


@pytest.fixture(scope="session")
def data_dir() -> Path:
    value = os.environ.get("TFREXP_DATA_DIR")
    if not value or not (Path(value) / "mnist").is_dir():
        pytest.fail(f"TFREXP_DATA_DIR={value!r} must name a folder holding mnist/ (the real MNIST IDX files)")
    return Path(value)


@pytest.fixture
def make_settings(tmp_path, data_dir):
    """settings(*overrides) -> typed Config writing under this test's tmp_path."""

    def make(*overrides: str, output_dir: Path | None = None) -> config.Config:
        base = [f"paths.output_dir={output_dir or tmp_path / 'outputs'}", f"paths.data_dir={data_dir}"]
        return config.to_settings(compose_config(*base, *overrides))

    return make


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind(tmp_path_factory):
    """After the last test: no process that a test started still runs (servers, Ray heads, browsers, jobs)
    and no sweep folder is still held (a `mlflow_sweep.json` whose sweep never ended)."""
    yield
    base = tmp_path_factory.getbasetemp()
    held = sorted(str(path.relative_to(base)) for path in base.rglob("mlflow_sweep.json"))
    # Python's own helpers (multiprocessing's resource tracker, forkserver) live as long as this process.
    running = [command for child in psutil.Process().children(recursive=True)
               if child.is_running() and child.status() != psutil.STATUS_ZOMBIE
               and "multiprocessing." not in (command := " ".join(child.cmdline())[:200])]
    assert (held, running) == ([], []), "left behind by the tests"
