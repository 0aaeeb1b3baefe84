"""Is a Ray cluster listening at the address a user named? Asked once, quickly, before Ray's own client, which
retries an address where nothing listens for minutes (20 tries of about 35 s each, Ray 2.60; a sweep on
`hydra/launcher=ray_cluster` with a dead head address, which connects twice, was still waiting after 15 minutes
here, 2026-12-05). And connected to without taking the process's stop handlers: `ray.init` puts in Ray's own for
SIGTERM, which ended a sweep on `hydra/launcher=ray` at once (exit 1 or an abort, Ray 2.60) with its MLflow parent
and job left RUNNING. A leaf: the records' Ray engine, the sweepers and the Ray launcher's GPU resolver use it."""

from __future__ import annotations

import os
import signal
import socket
import threading
from typing import Any

from omegaconf import OmegaConf

# Ray's own lookups of a cluster on this machine (RAY_ADDRESS unset, `ray start` files, running processes),
# which fail at once when there is none: left to Ray.
LOOKUPS = {"", "auto", "local"}
LAUNCHER_ADDRESS = "hydra.launcher.ray.init.address"  # the Ray launchers' (ray, ray_cluster) address setting
# The launcher of `hydra/launcher=ray` and `ray_cluster`, which connects from the driver (ray_aws runs elsewhere).
RAY_LAUNCHER = "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"


def require_listening(address: str | None, timeout_s: float = 5.0) -> None:
    """Raise ConnectionError when nothing accepts a connection at a `host:port` or `ray://host:port` address
    within `timeout_s`. No address or `auto` means RAY_ADDRESS when it is set, as it does to `ray.init`."""
    if address in (None, "auto") and os.environ.get("RAY_ADDRESS"):
        address = os.environ["RAY_ADDRESS"]
    if address is None or address in LOOKUPS:
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        return  # not host:port: Ray says what it makes of it
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except socket.gaierror as error:
        raise ConnectionError(f"no host {host} ({error.strerror})") from None
    except OSError as error:
        reason = error.strerror or f"no answer in {timeout_s:g} s"
        raise ConnectionError(f"nothing answers at {host}:{port} ({reason})") from None


def connect(**options: Any) -> None:
    """`ray.init(**options)` once its address answers (require_listening), the handlers of SIGINT and SIGTERM
    that Python code put in before kept: a sweep's or a run's, which end its MLflow runs before the process."""
    import ray

    require_listening(options.get("address"))
    main = threading.current_thread() is threading.main_thread()  # handlers belong to the main thread
    kept = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        ray.init(**options)
    finally:  # a failed init has put in Ray's handler too
        for number, handler in kept.items():
            if callable(handler):  # not SIG_DFL or SIG_IGN: there Ray's handler does no harm
                signal.signal(number, handler)


def require_launcher_cluster(config: Any) -> None:
    """A sweep on a Ray launcher with an address: its cluster answers, before the sweep waits on it. With a
    launcher that connects from this process (RAY_LAUNCHER), connected here, keeping the sweep's stop handlers
    (the launcher then finds Ray connected and goes on)."""
    init = OmegaConf.select(config, "hydra.launcher.ray.init", default=None)
    if init is None:
        return  # not a Ray launcher: a RAY_ADDRESS the user has set for other work is none of its business
    address = OmegaConf.select(config, LAUNCHER_ADDRESS, default=None)
    try:
        if OmegaConf.select(config, "hydra.launcher._target_", default=None) != RAY_LAUNCHER:
            require_listening(None if address is None else str(address))
        else:
            import ray

            if not ray.is_initialized():  # ray_cluster's GPU resolver may have connected already
                options = OmegaConf.to_container(init, resolve=True)
                options.setdefault("object_store_memory", 78643200)  # as the plugin's launch does (ray_cluster: null)
                connect(**options)
    except ConnectionError as error:
        # The launcher's address defaults to RAY_ADDRESS (hydra/launcher=ray_cluster), which a user may have set.
        raise ConnectionError(f"no Ray cluster at {address!r} ({LAUNCHER_ADDRESS}, RAY_ADDRESS): {error}") from None
