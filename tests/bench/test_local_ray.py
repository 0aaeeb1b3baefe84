"""The local Ray head of the bench and the tests (tfrexp/bench/local_ray.py), when it cannot start."""

from __future__ import annotations

import pytest

from tfrexp.bench import local_ray
from tfrexp.bench.local_ray import ray_head

pytestmark = pytest.mark.faults  # a real `ray start` that fails


def test_a_head_that_fails_to_start_reports_its_log(tmp_path):
    with pytest.raises(RuntimeError, match="(?s)the Ray head did not start: .*Resource quantities must be nonnegative"):
        with ray_head(tmp_path, num_cpus=-1):
            pytest.fail("a head with -1 CPUs started")


def test_the_head_is_given_different_ports_from_where_no_other_process_is_handed_one():
    """Ray's own processes bind ports 0 (the kernel's ephemeral range) and 10002-19999 (its workers) while the
    head starts; a port picked from those could be taken before `ray start` binds it (a bench run failed so)."""
    low, _ = local_ray._ephemeral_ports()
    for _ in range(20):
        ports = local_ray._free_ports(4)
        assert len(set(ports)) == 4 and all(20000 <= port < low for port in ports), ports
