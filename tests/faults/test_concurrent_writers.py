"""Processes asking for the same version at once: one writes, the others wait and reuse; a lock
left by a killed writer blocks no one."""

from __future__ import annotations

import subprocess
import sys

from helpers import start_writer
from tfrexp import config, run_context, sources
from tfrexp.records.writer import lock_path, version_fingerprint


def _finish(processes):
    """Each writer's last word (WROTE or REUSED). Reads through the text wrapper, which may already hold
    lines read ahead by readline()."""
    outputs = []
    for process in processes:
        stdout = process.stdout.read()
        assert process.wait(timeout=300) == 0, process.stderr.read()[-2000:]
        outputs.append(stdout.splitlines()[-1].split()[0])
    return sorted(outputs)


def test_one_writes_and_the_others_reuse(tmp_path, data_dir):
    overrides = [f"paths.output_dir={tmp_path / 'outputs'}", f"paths.data_dir={data_dir}",
                 "dataset.max_examples_per_split=5000"]
    assert _finish([start_writer(*overrides) for _ in range(4)]) == ["REUSED", "REUSED", "REUSED", "WROTE"]
    versions = [p for p in (tmp_path / "outputs" / "records" / "mnist").iterdir() if not p.name.endswith(".lock")]
    assert len(versions) == 1 and (versions[0] / "manifest.json").is_file()


HOLD_LOCK = """
import fcntl, sys, time
handle = open(sys.argv[1], "a")
fcntl.flock(handle, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(600)
"""

TRY_LOCK = """
import fcntl, sys
handle = open(sys.argv[1], "a")
try:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    print("held", flush=True)
else:
    print("free", flush=True)
"""


def _probe(lock) -> str:
    """Another process's non-blocking try at the lock: "held" while someone holds it."""
    return subprocess.run([sys.executable, "-c", TRY_LOCK, str(lock)], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_a_killed_lock_holder_blocks_no_one(tmp_path, data_dir):
    overrides = [f"paths.output_dir={tmp_path / 'outputs'}", f"paths.data_dir={data_dir}",
                 "dataset.max_examples_per_split=5000"]
    settings = config.to_settings(run_context.compose(*overrides))
    version, _ = version_fingerprint(sources.build(settings.dataset), settings.writer)
    root = settings.paths.records_dir / "mnist"
    root.mkdir(parents=True)
    lock = lock_path(root, version)
    assert _probe(lock) == "free"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lock)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    waiting = [start_writer(*overrides) for _ in range(2)]
    for process in waiting:
        assert process.stdout.readline().strip() == "started"
    assert _probe(lock) == "held"
    # Whatever the writers have done by now, none can publish while the lock is held.
    assert not any(path for path in root.iterdir() if (path / "manifest.json").exists())
    assert [process.poll() for process in waiting] == [None, None], "the writers wait for the lock"
    holder.kill()  # SIGKILL: the holder never unlocks; the kernel drops its lock
    holder.wait(timeout=30)
    assert _finish(waiting) == ["REUSED", "WROTE"]
    assert list(root.glob(".tmp-*")) == []
