"""A Ray address that names a host and port is asked once, at once, whether anything listens there: Ray's own
client retries a dead one for minutes (over 15 for a sweep's launcher, measured) before it says so."""

from __future__ import annotations

import socket

import pytest
from omegaconf import OmegaConf

from helpers import free_port
from tfrexp.config.schema import WriterConfig, WriterEngine
from tfrexp.errors import DataError
from tfrexp.ray_head import require_launcher_cluster, require_listening
from tfrexp.records import engines


def test_an_address_where_something_listens_passes_and_a_dead_one_is_refused():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        require_listening(f"127.0.0.1:{port}")
        require_listening(f"ray://127.0.0.1:{port}")
    dead = free_port()
    for address in (f"127.0.0.1:{dead}", f"ray://127.0.0.1:{dead}"):
        with pytest.raises(ConnectionError, match=f"nothing answers at 127.0.0.1:{dead} \\(Connection refused\\)"):
            require_listening(address)


@pytest.mark.parametrize("address", [None, "", "auto", "local", "not-an-address"])
def test_ray_s_own_lookups_are_left_to_ray(address, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    require_listening(address)


@pytest.mark.parametrize("address", [None, "auto"])
def test_no_address_or_auto_is_ray_address_when_set_as_ray_init_takes_it(address, monkeypatch):
    dead = free_port()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{dead}")
    with pytest.raises(ConnectionError, match=f"nothing answers at 127.0.0.1:{dead}"):
        require_listening(address)


def test_a_host_that_does_not_resolve_is_named():
    with pytest.raises(ConnectionError, match=r"^no host nosuchhost\.invalid \("):
        require_listening("nosuchhost.invalid:6379")


def test_a_sweep_on_a_dead_ray_head_is_refused_naming_the_setting(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    dead = free_port()
    config = OmegaConf.create({"hydra": {"launcher": {"ray": {"init": {"address": f"127.0.0.1:{dead}"}}}}})
    with pytest.raises(ConnectionError) as raised:
        require_launcher_cluster(config)
    assert str(raised.value) == (f"no Ray cluster at '127.0.0.1:{dead}' (hydra.launcher.ray.init.address, "
                                 f"RAY_ADDRESS): nothing answers at 127.0.0.1:{dead} (Connection refused)")
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{dead}")
    require_launcher_cluster(OmegaConf.create({"hydra": {"launcher": {"n_jobs": 2}}}))  # not a Ray launcher


def test_the_ray_writer_on_a_dead_head_stops_in_one_line(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    dead = free_port()
    writer = WriterConfig(engine=WriterEngine.ray, ray_address=f"127.0.0.1:{dead}")
    with pytest.raises(DataError) as raised:
        engines.run_tasks([], tmp_path, writer, decodes_files=False, progress=lambda count: None)
    assert str(raised.value) == (f"writer.engine=ray: no Ray cluster at '127.0.0.1:{dead}' (writer.ray_address, "
                                 f"RAY_ADDRESS): nothing answers at 127.0.0.1:{dead} (Connection refused)")
