"""Fault tests provoke the fault for real: SIGKILL, flipped bytes, parallel processes. `pytest -m faults`."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.faults)
