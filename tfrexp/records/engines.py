"""Where a version's shard tasks run (writer.engine): `local` on this machine, `ray` on a Ray cluster. Both
return the tasks' results in plan order; the bytes of every shard are the same whichever ran it.

`local` prepares the items (read, screen, decode, resize, encode: the work) in `writer.num_workers` processes
and writes each shard here, in plan order, as the prepared examples arrive. A worker never imports TensorFlow:
that takes about 5 s per process on the 2-core machine, longer than decoding 5,000 photos takes each core.
`ray` runs each whole task (prepare and write) as a Ray task, which Ray retries if its worker dies.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

from tfrexp.config.schema import WriterConfig, WriterEngine
from tfrexp.errors import DataError, first_line
from tfrexp.ray_head import connect
from tfrexp.records.shards import ShardResult, ShardTask, ShardTaskFailed, run_shard_task, write_shard

log = logging.getLogger(__name__)

Progress = Callable[[int], None]  # called with the number of items a finished piece of work covered


def run_tasks(tasks: list[ShardTask], directory: Path, writer: WriterConfig, decodes_files: bool,
              progress: Progress) -> list[ShardResult]:
    if writer.engine is WriterEngine.ray:
        return _on_ray(tasks, directory, writer.ray_address or os.environ.get("RAY_ADDRESS") or "auto", progress)
    return _locally(tasks, directory, writer.workers if decodes_files else 1, progress)


def _locally(tasks: list[ShardTask], directory: Path, workers: int, progress: Progress) -> list[ShardResult]:
    if workers == 1 or not tasks:
        return [_write(directory, task, map(task.prepare, task.items), progress) for task in tasks]
    # spawn, not fork: this process has TensorFlow's threads running, which a forked child must not inherit. A
    # spawned worker imports this process's main module: an entrypoint's must not import TensorFlow at the top.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            # Every item of every task submitted at once, in plan order, so the workers never wait on a shard's end.
            prepared = pool.map(tasks[0].prepare, itertools.chain.from_iterable(task.items for task in tasks),
                                chunksize=16)
            return [_write(directory, task, itertools.islice(prepared, len(task.items)), progress)
                    for task in tasks]
        finally:
            pool.shutdown(cancel_futures=True)


def _write(directory: Path, task: ShardTask, examples, progress: Progress) -> ShardResult:
    result = write_shard(directory, task, examples)
    progress(len(task.items))
    return result


def _on_ray(tasks: list[ShardTask], directory: Path, address: str, progress: Progress) -> list[ShardResult]:
    """One Ray task per shard (one CPU each), retried by Ray when its worker dies. A task that fails (a node that
    cannot read a file, or write the staging folder) fails the write in one line; nothing is published."""
    try:
        import ray
    except ImportError:
        raise DataError("writer.engine=ray: Ray is not installed (pip install 'tfrexp[ray]')") from None
    connected_here = not ray.is_initialized()
    if connected_here:
        try:
            # Asked at once (Ray's own client retries a dead address for minutes); a run's stop handlers kept.
            connect(address=address, logging_level=logging.WARNING, log_to_driver=False, configure_logging=False)
        except ConnectionError as error:
            raise DataError(f"writer.engine=ray: no Ray cluster at {address!r} (writer.ray_address, "
                            f"RAY_ADDRESS): {first_line(error)}") from None
    try:
        remote = ray.remote(num_cpus=1, max_retries=3)(run_shard_task)
        # Absolute: a task runs in its worker's folder (a node's, or the head's), not in the one we run in.
        pending = {remote.remote(str(directory.resolve()), task): index for index, task in enumerate(tasks)}
        results: list[ShardResult | None] = [None] * len(tasks)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(done[0])
            try:
                results[index] = ray.get(done[0])
            except (ray.exceptions.RayTaskError, ray.exceptions.WorkerCrashedError) as error:
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise DataError(f"writer.engine=ray: the task of {tasks[index].file} failed {_cause(error)}; "
                                f"every node must see the source folder and {directory.parent} at the same path "
                                "(a shared file system)") from None
            progress(len(tasks[index].items))
        return results  # type: ignore[return-value]
    finally:
        if connected_here:
            ray.shutdown()


def _cause(error: Exception) -> str:
    """Where and why, in one line: the task's own ShardTaskFailed (which RayTaskError wraps), or Ray's reason."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, ShardTaskFailed):
        return f"on node {cause.node}: {cause.reason.splitlines()[0]}"
    text = first_line(error)
    return f"({text})" if text == type(error).__name__ else f"({type(error).__name__}: {text})"
