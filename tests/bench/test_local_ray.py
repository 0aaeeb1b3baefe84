"""The local Ray head of the bench and the tests (tfrexp/bench/local_ray.py), when it cannot start."""

from __future__ import annotations

import pytest

from tfrexp.bench.local_ray import ray_head

pytestmark = pytest.mark.faults  # a real `ray start` that fails


def test_a_head_that_fails_to_start_reports_its_log(tmp_path):
    with pytest.raises(RuntimeError, match="(?s)the Ray head did not start: .*Resource quantities must be nonnegative"):
        with ray_head(tmp_path, num_cpus=-1):
            pytest.fail("a head with -1 CPUs started")
