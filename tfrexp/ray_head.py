"""Is a Ray cluster listening at the address a user named? Asked once, quickly, before Ray's own client, which
retries an address where nothing listens for minutes (20 tries of about 35 s each, Ray 2.60; a sweep on
`hydra/launcher=ray_cluster` with a dead head address, which connects twice, was still waiting after 15 minutes
here, 2026-12-05). A leaf: the records' Ray engine, the sweepers and the Ray launcher's GPU resolver ask it."""

from __future__ import annotations

import os
import socket
from typing import Any

from omegaconf import OmegaConf

# Ray's own lookups of a cluster on this machine (RAY_ADDRESS unset, `ray start` files, running processes),
# which fail at once when there is none: left to Ray.
LOOKUPS = {"", "auto", "local"}
LAUNCHER_ADDRESS = "hydra.launcher.ray.init.address"  # the Ray launchers' (ray, ray_cluster) address setting


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


def require_launcher_cluster(config: Any) -> None:
    """A sweep on a Ray launcher with an address: its cluster answers, before the sweep waits on it."""
    if OmegaConf.select(config, "hydra.launcher.ray.init", default=None) is None:
        return  # not a Ray launcher: a RAY_ADDRESS the user has set for other work is none of its business
    address = OmegaConf.select(config, LAUNCHER_ADDRESS, default=None)
    try:
        require_listening(None if address is None else str(address))
    except ConnectionError as error:
        # The launcher's address defaults to RAY_ADDRESS (hydra/launcher=ray_cluster), which a user may have set.
        raise ConnectionError(f"no Ray cluster at {address!r} ({LAUNCHER_ADDRESS}, RAY_ADDRESS): {error}") from None
