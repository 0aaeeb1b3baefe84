"""Shared fixtures: compose the real conf/ and shrink it; the real MNIST files from TFREXP_DATA_DIR."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tfrexp import config

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def data_dir() -> Path:
    value = os.environ.get("TFREXP_DATA_DIR")
    if not value or not (Path(value) / "mnist").is_dir():
        pytest.fail(f"TFREXP_DATA_DIR={value!r} must name a folder holding mnist/ (the real MNIST IDX files)")
    return Path(value)


compose_config = config.compose  # the real config tree with overrides, as the entrypoint gets it


@pytest.fixture
def make_settings(tmp_path, data_dir):
    """settings(*overrides) -> typed Config writing under this test's tmp_path."""

    def make(*overrides: str, output_dir: Path | None = None) -> config.Config:
        base = [f"paths.output_dir={output_dir or tmp_path / 'outputs'}", f"paths.data_dir={data_dir}"]
        return config.to_settings(compose_config(*base, *overrides))

    return make


def run_tfrexp(*arguments: str, env: dict | None = None, cwd: Path = REPO, timeout: float = 600):
    """The installed entrypoint in a child process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "tfrexp", *arguments],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
