"""The GPUs a job trains on, chosen before TensorFlow loads: TensorFlow reads CUDA_VISIBLE_DEVICES once, when
it loads, and a process cannot change its GPUs afterwards.

- A single run, and the jobs a sweep runs one after another in its own process (Hydra's basic launcher,
  joblib with n_jobs=1), see every GPU: nothing is changed, and `trainer.distribution=auto` mirrors over them.
- A job of a sweep that runs in a worker process the sweep started (the joblib launcher's loky workers, which
  are reused from job to job) takes `trainer.gpus_per_job` of the sweep's GPUs that no other worker holds. The
  worker keeps them for its life, since the TensorFlow it loaded keeps them: a lease is an `flock` on
  `<sweep dir>/.gpus/<id>.lock`, which the kernel releases when the worker exits, however it exits.
- A Ray task that asked for GPUs (hydra/launcher=ray_cluster does when the cluster has any: `ray_gpus_if_any`)
  finds CUDA_VISIBLE_DEVICES set by Ray, and Ray runs each GPU task in a fresh worker (max_calls=1).

Every run logs what it saw as `runtime.visible_devices` (`visible_devices`). No TensorFlow here.
"""

from __future__ import annotations

import fcntl
import logging
import multiprocessing
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from hydra.types import RunMode
from omegaconf import OmegaConf

from tfrexp.config.schema import TrainerConfig
from tfrexp.errors import TfrexpError
from tfrexp.ray_head import connect

log = logging.getLogger(__name__)

VISIBLE = "CUDA_VISIBLE_DEVICES"
# A worker that leaves (loky restarts one whose memory grew, or one that crashed) frees its GPUs as it exits,
# within seconds; a job waits that long for them. More jobs side by side than GPUs never find one free.
LEASE_WAIT_S = 60.0

_held: tuple[list[str], list[int]] | None = None  # this process's lease: (GPU ids, locked descriptors)


def visible_devices() -> str:
    """What this process's CUDA_VISIBLE_DEVICES lets it see: the ids ("0", "1,3"), "all" when unset, "none"
    when empty."""
    value = os.environ.get(VISIBLE)
    if value is None:
        return "all"
    return value.strip() or "none"


def choose_job_gpus(trainer: TrainerConfig, hydra_config: Any) -> None:
    """Give this job's process its own GPUs when it is a worker of a sweep (see the module's doc); call before
    TensorFlow loads. `hydra_config` is the job's HydraConfig, or None outside Hydra (the Python API)."""
    global _held
    if hydra_config is None or hydra_config.mode != RunMode.MULTIRUN or multiprocessing.parent_process() is None:
        return  # a single run, or jobs one at a time in the sweep's own process: every GPU
    if _held is not None:
        return  # TensorFlow loaded with the GPUs of this worker's first job: they stay its own
    gpus = [str(gpu) for gpu in trainer.sweep_gpus] if trainer.sweep_gpus is not None else sweep_gpus()
    if not gpus:
        return  # no GPU to share out: the jobs train on the CPU
    if trainer.gpus_per_job == 0:
        os.environ[VISIBLE] = ",".join(gpus)  # asked to share: every job sees every GPU of the sweep
        return
    folder = Path(str(hydra_config.sweep.dir)) / ".gpus"
    _held = take_gpus(gpus, trainer.gpus_per_job, folder, LEASE_WAIT_S)
    os.environ[VISIBLE] = ",".join(_held[0])
    log.info("this job's worker (pid %d) trains on GPU %s of %s, its own for its life", os.getpid(),
             ",".join(_held[0]), ",".join(gpus))


def sweep_gpus() -> list[str]:
    """The GPUs a sweep's workers share out when trainer.sweep_gpus is null: those the sweep's process was
    given (CUDA_VISIBLE_DEVICES, inherited by its workers), else every NVIDIA GPU of the machine, counted
    without loading CUDA (the driver's /proc entries, else `nvidia-smi -L`)."""
    value = os.environ.get(VISIBLE)
    if value is not None:
        return [gpu.strip() for gpu in value.split(",") if gpu.strip()]
    proc = Path("/proc/driver/nvidia/gpus")
    if proc.is_dir():
        return [str(index) for index in range(len(list(proc.iterdir())))]
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(index) for index in range(len(re.findall(r"^GPU \d+:", listed, re.MULTILINE)))]


def take_gpus(gpus: list[str], count: int, folder: Path, wait_s: float) -> tuple[list[str], list[int]]:
    """Lock `count` of `gpus` that no other process holds; returns their ids and the locked descriptors (the
    lease lasts while they are open: for this process's life). Waits up to `wait_s` for enough to be free."""
    folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        ids, descriptors = [], []
        for gpu in gpus:
            descriptor = os.open(folder / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', gpu)}.lock", os.O_RDWR | os.O_CREAT,
                                 0o644)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                continue
            os.ftruncate(descriptor, 0)
            os.write(descriptor, f"{os.getpid()}\n".encode())  # who holds it, for a person looking
            ids.append(gpu)
            descriptors.append(descriptor)
            if len(ids) == count:
                return ids, descriptors
        for descriptor in descriptors:  # too few: hold none, so two waiting jobs cannot each hold half
            os.close(descriptor)
        if time.monotonic() > deadline:
            raise TfrexpError(
                f"no free GPU for this job: each of the sweep's GPUs {','.join(gpus)} is held by another of its "
                f"workers ({count} per job, for the worker's life). Run at most {len(gpus) // count} jobs side "
                f"by side (hydra.launcher.n_jobs), give the sweep more (trainer.sweep_gpus=[...]), or let jobs "
                f"share them (trainer.gpus_per_job=0)")
        time.sleep(0.5)


def ray_gpus_if_any(count: Any, init: Any = None) -> Any:
    """`${ray_gpus_if_any:N,${..init}}` in hydra/launcher/ray_cluster.yaml's remote options: N GPUs per task
    when the Ray cluster has GPUs, else 0 (a task that asks a cluster without GPUs for one waits for ever).
    Hydra resolves the launcher's options when it creates the launcher, before the launcher connects, so this
    connects first, with the launcher's own `init` options (the launcher then finds Ray connected and goes
    on). If that fails: 0, and the sweeper (nothing at the address: tfrexp.ray_head) or the launcher's own attempt
    says why."""
    import ray  # only the Ray launcher's config calls this

    if not ray.is_initialized():
        if init is None:
            return 0
        try:
            connect(**OmegaConf.to_container(init, resolve=True))  # a dead head address: at once, not in minutes
        except Exception:  # noqa: BLE001 - reported by the sweeper (tfrexp.ray_head) or the launcher
            return 0
    return count if ray.cluster_resources().get("GPU", 0) > 0 else 0


def register_resolver() -> None:
    """`ray_gpus_if_any` for the Ray launcher's config; called when the app starts (run_context.register_schemas)."""
    if not OmegaConf.has_resolver("ray_gpus_if_any"):
        OmegaConf.register_new_resolver("ray_gpus_if_any", ray_gpus_if_any)
