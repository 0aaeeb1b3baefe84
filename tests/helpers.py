"""Helpers shared by the tests: the real config, the real entrypoint, and a writer in a child process."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tfrexp import run_context, sources
from tfrexp.bench import local_ray
from tfrexp.config.schema import Config
from tfrexp.records.writer import RecordSet, ensure_records

REPO = Path(__file__).resolve().parent.parent

compose_config = run_context.compose  # the real config tree with overrides, as the entrypoint gets it


def write_records(settings: Config) -> RecordSet:
    """The records of these settings, written or reused, as a run gets them."""
    return ensure_records(sources.build(settings.dataset), settings.writer, settings.paths.records_dir)


def user_environment() -> dict:
    """This process's environment as a user's shell has it: JAX, imported here through TensorFlow, sets
    TF_CPP_MIN_LOG_LEVEL for the whole process, which a child would take for the user's own setting."""
    return {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}


def run_tfrexp(*arguments: str, env: dict | None = None, cwd: Path = REPO, timeout: float = 600):
    """The installed entrypoint in a child process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "tfrexp", *arguments],
        cwd=cwd,
        env={**user_environment(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


WRITER = """
import sys
from tfrexp import config, run_context, sources
from tfrexp.records.writer import ensure_records
settings = config.to_settings(run_context.compose(*sys.argv[1:]))
print("started", flush=True)
record_set = ensure_records(sources.build(settings.dataset), settings.writer, settings.paths.records_dir)
print("REUSED" if record_set.reused else "WROTE", record_set.directory, flush=True)
"""


def start_writer(*overrides: str, env: dict | None = None) -> subprocess.Popen:
    """ensure_records in a child process of its own session, so its workers can be killed with it."""
    return subprocess.Popen([sys.executable, "-c", WRITER, *overrides], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, env=env or os.environ.copy())


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_mlflow_server(backend_db: Path, artifacts: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """A real `mlflow server` on loopback with its own SQLite store; returns once /health answers."""
    port = port or free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{backend_db}", "--artifacts-destination", str(artifacts),
         "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                return server, uri
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"mlflow server did not start: {server.stderr.read().decode()[-2000:]}")
            time.sleep(0.5)


def stop_mlflow_server(server: subprocess.Popen, kill: bool = False) -> None:
    """Stop the server and its worker processes (SIGKILL when kill=True, as a crash would)."""
    os.killpg(server.pid, signal.SIGKILL if kill else signal.SIGTERM)
    server.wait(timeout=30)


def ray_head(cwd: Path, num_cpus: int = 2, num_gpus: int | None = None, without: tuple[str, ...] = ()):
    """A real Ray head on 127.0.0.1 as the bench starts it (tfrexp.bench.local_ray), its jobs in a user's
    environment less the variables `without` (a head started elsewhere has not the user's); `num_gpus` declares
    GPUs the machine need not have."""
    env = {key: value for key, value in user_environment().items() if key not in without}
    return local_ray.ray_head(cwd, num_cpus, base_env=env, num_gpus=num_gpus)


def listening_addresses(session: int) -> list[str]:
    """The local addresses of the TCP sockets that processes of a session (see start_new_session) listen on."""
    addresses = []
    for line in subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout.splitlines():
        pids = [int(pid) for pid in re.findall(r"pid=(\d+)", line)]
        with contextlib.suppress(ProcessLookupError):
            if any(os.getsid(pid) == session for pid in pids):
                addresses.append(line.split()[3])
    return addresses


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    return host in {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


class _SignalInFinalizer:
    def __init__(self, signum: int) -> None:
        self.signum = signum

    def __del__(self) -> None:
        os.kill(os.getpid(), self.signum)


def signal_in_a_finalizer(signum: int) -> None:
    """Send `signum` to this process from a `__del__`, as it arrives while Python runs a finalizer (a tf.data
    iterator's, say): Python prints the handler's KeyboardInterrupt as "Exception ignored in ..." and drops it."""
    _SignalInFinalizer(signum)  # made and dropped at once: its __del__ runs here
