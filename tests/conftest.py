"""Shared fixtures: the real MNIST files from TFREXP_DATA_DIR, and settings that compose the real conf/."""

from __future__ import annotations

import os
from pathlib import Path

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
