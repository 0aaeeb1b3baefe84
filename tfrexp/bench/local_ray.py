"""A Ray head on 127.0.0.1 for the sweep benchmark and the tests: `ray start --head` as a user runs it, kept
on loopback, and stopped on exit even on failure."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

# Ray turns "localhost" into the machine's outward address unless told not to; with these in the environment
# of `ray start` and of every process that connects, it stays on 127.0.0.1.
RAY_ON_LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}


# The ports picked for the head's own servers lie between Ray's worker ports (10002-19999, `ray start`'s
# defaults) and the kernel's ephemeral range, which is where the head's other processes (the object and node
# managers) and every outgoing connection get theirs: a port picked from that range could be handed to one of
# them before `ray start` bound it, and a bench run failed so (2026-12-06: "Failed to bind to address
# 127.0.0.1:34261 ... Address already in use").
_PICKED_PORTS_FROM = 20000


def _ephemeral_ports() -> tuple[int, int]:
    """The range the kernel hands out for a port 0 bind or a connection (Linux; elsewhere IANA's)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 49152, 65535


def _free_ports(count: int) -> list[int]:
    """`count` different ports free on 127.0.0.1 now, outside the ranges Ray's processes and the kernel take
    ports from; where the kernel's range leaves none below it, ports it picks (the race above remains there).
    Each probe stays bound until all are chosen, so no port is picked twice; drawn from the system's entropy,
    not `random`'s state, which a seeded run repeats."""
    low, high = _PICKED_PORTS_FROM, _ephemeral_ports()[0] - 1
    candidates = random.SystemRandom().sample(range(low, high + 1), max(0, min(500, high - low + 1)))
    ports: list[int] = []
    with ExitStack() as probes:
        for port in [*candidates, *[0] * count]:
            probe = probes.enter_context(socket.socket())
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            ports.append(probe.getsockname()[1])
            if len(ports) == count:
                return ports
    raise RuntimeError(f"no {count} free ports on 127.0.0.1 for the Ray head")


@contextmanager
def ray_head(cwd: Path, num_cpus: int = 2, base_env: dict | None = None,
             num_gpus: int | None = None) -> Iterator[tuple[str, dict, int]]:
    """Yields the head's address, the environment a process needs to connect to it (`base_env`, else this
    process's, made to keep Ray on loopback), and the session id of the cluster's processes. Jobs' workers
    start in `cwd`, with that environment; the head's log is written there too. `num_gpus` declares that many
    GPUs (Ray hands them out, as CUDA_VISIBLE_DEVICES, even where the machine has none); None: Ray counts them."""
    env = {**(os.environ if base_env is None else base_env), **RAY_ON_LOOPBACK}
    ray = str(Path(sys.executable).with_name("ray"))
    port, client_port, agent_port, metrics_port = _free_ports(4)
    address = f"127.0.0.1:{port}"
    log = open(cwd / "ray-head.log", "w")
    # `ray start --block` given SIGTERM first drains its node for up to 30 s (for Ray Serve's traffic); this
    # head serves none, and stopping it took 33.4 s instead of 3.4 s (2026-12-06).
    head_env = {**env, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    # --block keeps `ray start` in the foreground, the parent of this cluster's processes in a session of its
    # own, so stopping it stops this cluster only (`ray stop` would stop every cluster of the machine).
    head = subprocess.Popen(
        [ray, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
         f"--num-cpus={num_cpus}", "--include-dashboard=false", "--disable-usage-stats",
         f"--ray-client-server-port={client_port}", f"--dashboard-agent-listen-port={agent_port}",
         f"--metrics-export-port={metrics_port}", *([] if num_gpus is None else [f"--num-gpus={num_gpus}"])],
        cwd=cwd, env=head_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        status = [ray, "status", f"--address={address}"]
        while not _answers(status, env):
            if head.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Ray head did not start: {(cwd / 'ray-head.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield address, env, head.pid
    finally:
        _stop_group(head)
        log.close()
        # `ray start` notes its address for address="auto"; left behind, it sends a later `auto` to a head that
        # is gone (Ray then waits on it for ever). `ray stop` would remove it, but stops every cluster.
        noted = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if noted.is_file() and noted.read_text().strip() == address:
            noted.unlink(missing_ok=True)


def _answers(status: list[str], env: dict) -> bool:
    """Whether `ray status` shows the head's node active; bounded, since it waits 45 s for a head that is not
    (yet) there. While the head starts (and when it is failing to), its control store answers with exit 0 and
    "No cluster status", or a status without an active node: that is not a started head."""
    try:
        answer = subprocess.run(status, env=env, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False
    return answer.returncode == 0 and re.search(r"Active:\s*\n\s*\d+ node_", answer.stdout) is not None


def _stop_group(head: subprocess.Popen) -> None:
    """SIGTERM to the head's process group, SIGKILL if it lingers. A head that failed to start may have taken
    its whole group with it: nothing is left to signal then."""
    for sig, wait_s in ((signal.SIGTERM, 60), (signal.SIGKILL, 30)):
        try:
            os.killpg(head.pid, sig)
        except ProcessLookupError:
            break
        try:
            head.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue
    head.wait(timeout=30)
