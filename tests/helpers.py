"""Helpers shared by the tests: the real config, the real entrypoint, and a writer in a child process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tfrexp import config

REPO = Path(__file__).resolve().parent.parent

compose_config = config.compose  # the real config tree with overrides, as the entrypoint gets it


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


WRITER = """
import sys
from tfrexp import config
from tfrexp.records.writer import ensure_records
settings = config.to_settings(config.compose(*sys.argv[1:]))
print("started", flush=True)
record_set = ensure_records(settings.dataset, settings.writer, settings.paths.records_dir)
print("REUSED" if record_set.reused else "WROTE", record_set.directory, flush=True)
"""


def start_writer(*overrides: str) -> subprocess.Popen:
    """ensure_records in a child process of its own session, so its workers can be killed with it."""
    return subprocess.Popen([sys.executable, "-c", WRITER, *overrides], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, env=os.environ.copy())


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
