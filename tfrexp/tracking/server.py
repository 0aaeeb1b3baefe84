"""A shared local MLflow tracking server (`make server` / `make server-stop`): `mlflow server` on 127.0.0.1 over a
PostgreSQL store, for sweeps whose parallel jobs would lock a SQLite file.

Everything lives under one root folder (outputs/server by default): PostgreSQL's data folder `pgdata/` (its log
is `pgdata/postgresql.log`) and the store's passwords `pgpass` (tracking/postgres.py), the artifacts
`artifacts/`, the server's log `mlflow.log`, and `server.json`, which holds the server's pid and tracking URI.

    python -m tfrexp.tracking.server start [--root outputs/server] [--port 5001] [--pg-port 5433] [--workers 4]
    python -m tfrexp.tracking.server stop [--root outputs/server]

Both are idempotent. The Python API, start(root, port, pg_port) -> tracking URI and stop(root), is what the
command runs, and what the tests run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tfrexp.errors import TfrexpError, exit_with_error
from tfrexp.tracking import postgres
from tfrexp.tracking.postgres import ServerError


def start(root: str | Path, port: int = 5001, pg_port: int = 5433, *, workers: int = 4, durable: bool = True,
          timeout_s: float = 120) -> str:
    """Start PostgreSQL and `mlflow server` under root, or find them running; returns the tracking URI.

    durable=False turns off PostgreSQL's fsync: faster, but a crash of the machine may lose the store (tests).
    On any failure what this call started is stopped again before the error is raised.
    """
    root = Path(root).resolve()
    if root.exists() and not root.is_dir():
        raise ServerError(f"--root {root}: not a folder")
    postgres.bindir()  # before anything is touched: without PostgreSQL there is nothing to do
    running = _running_uri(root)
    if running:
        return running
    stop(root)  # a half-dead earlier start (a crashed server, a stale state file) starts afresh
    for option, number in (("--port", port), ("--pg-port", pg_port)):
        _check_free(option, number)
    if port == pg_port:
        raise ServerError(f"--port {port} and --pg-port {pg_port}: MLflow and PostgreSQL need two different ports")
    root.mkdir(parents=True, exist_ok=True)
    try:
        postgres.start(root, pg_port, durable)
        return _start_mlflow(root, port, pg_port, workers, timeout_s)
    except BaseException:  # Ctrl-C too: leave nothing half-started
        stop(root)
        raise


def stop(root: str | Path) -> list[str]:
    """Stop the mlflow server and PostgreSQL of root, whichever runs; returns what was stopped."""
    root = Path(root).resolve()
    stopped = []
    state = _read_state(root)
    if state and _is_our_group(state["pid"]):
        _stop_group(state["pid"])
        stopped.append(f"mlflow server (pid {state['pid']})")
    if postgres.stop(root):
        stopped.append(f"PostgreSQL ({root / 'pgdata'})")
    (root / "server.json").unlink(missing_ok=True)
    return stopped


def _running_uri(root: Path) -> str | None:
    """The URI of a server of root that is fully up: its process, its /health and its PostgreSQL."""
    state = _read_state(root)
    if not state or not _is_our_group(state["pid"]) or not _healthy(state["uri"]):
        return None
    return state["uri"] if postgres.is_running(root) else None


def _check_free(option: str, port: int) -> None:
    if not 0 < port < 65536:
        raise ServerError(f"{option} {port}: not a TCP port (1-65535)")
    with socket.socket() as probe:
        # As the servers bind: SO_REUSEADDR, so a port left in TIME_WAIT by a stopped server counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            raise ServerError(f"{option} {port}: 127.0.0.1:{port} is already in use ({error.strerror}); "
                              f"choose another port") from None


def _start_mlflow(root: Path, port: int, pg_port: int, workers: int, timeout_s: float) -> str:
    uri = f"http://127.0.0.1:{port}"
    log_path = root / "mlflow.log"
    with open(log_path, "ab") as log:
        # A session of its own: the server outlives this command and Ctrl-C in its terminal, and stop()
        # ends it together with its worker processes through the process group.
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", postgres.backend_uri(pg_port),
             "--artifacts-destination", str(root / "artifacts"), "--workers", str(workers)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True,
            env={**os.environ, **postgres.client_environment(root)})
    _write_state(root, {"pid": server.pid, "uri": uri, "pg_port": pg_port})
    deadline = time.monotonic() + timeout_s
    while not _healthy(uri):
        if server.poll() is not None or time.monotonic() > deadline:
            lines = log_path.read_text(errors="replace").strip().splitlines() or ["(empty log)"]
            how = f"no /health in {timeout_s:.0f} s" if server.returncode is None else f"exited ({server.returncode})"
            raise ServerError(f"mlflow server on {uri} did not start, {how}: {lines[-1]} (see {log_path})")
        time.sleep(0.5)
    return uri


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _group_members(pgid: int) -> list[int]:
    """The live processes of a process group. Zombies count as gone: nobody may reap them soon (this process
    when it started the server, or an init that does not reap), while os.kill(pid, 0) still finds them."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError):
            continue  # a process that ended while we looked
        if state != "Z" and int(group) == pgid:
            members.append(int(stat.parent.name))
    return members


def _is_our_group(pid: int) -> bool:
    """Whether the recorded server's process group still runs; a live leader must be mlflow, since its pid
    may have been given to another program once the whole group had ended."""
    members = _group_members(pid)
    if pid not in members:
        return bool(members)  # the leader has ended and left its workers: those are ours
    try:
        return b"mlflow" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False  # it ended while we looked


def _stop_group(pgid: int, grace_s: float = 20) -> None:
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while _group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _group_members(pgid):
            return


def _read_state(root: Path) -> dict | None:
    try:
        return json.loads((root / "server.json").read_text())
    except (OSError, ValueError):
        return None


def _write_state(root: Path, state: dict) -> None:
    (root / "server.json").write_text(json.dumps(state) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tfrexp.tracking.server", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--root", type=Path, default=Path("outputs/server"), help="folder of the store and logs")
    parser.add_argument("--port", type=int, default=5001, help="the MLflow server's port on 127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5433, help="PostgreSQL's port on 127.0.0.1")
    parser.add_argument("--workers", type=int, default=4, help="the MLflow server's worker processes")
    args = parser.parse_args(argv)
    # Under make, name the make target that stops it; run by hand, the command.
    stop_hint = "make server-stop" if os.environ.get("MAKELEVEL") else f"{parser.prog} stop --root {args.root}"
    try:
        if args.action == "start":
            uri = start(args.root, args.port, args.pg_port, workers=args.workers)
            print(f"tracking server ready: tracking.uri={uri} (stop: {stop_hint})")
            pg_port = _read_state(Path(args.root).resolve())["pg_port"]  # that of the server found running, too
            print(f"search studies: hydra.sweeper.storage={postgres.study_storage_uri(pg_port)}, with "
                  f"PGPASSFILE={Path(args.root).resolve() / postgres.PASSWORDS} in the environment")
        else:
            stopped = stop(args.root)
            print(f"stopped {' and '.join(stopped)}" if stopped else f"nothing was running under {args.root}")
    except TfrexpError as error:
        exit_with_error(error)


if __name__ == "__main__":
    main()
