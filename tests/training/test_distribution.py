"""trainer.distribution=mirrored for real, on two logical CPU devices: the same accuracy band as one device
on a slice of MNIST, the replicas logged, per-epoch metrics, and an interrupted run resumed into the same run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from helpers import REPO, user_environment, wait_for

pytestmark = pytest.mark.slow

# Logical devices must be set before TensorFlow first uses the CPU, so each run is a script of its own.
SCRIPT = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import tfrexp
for overrides in json.loads(sys.argv[1]):
    result = tfrexp.run(overrides)
    print(json.dumps({"run_id": result.run_id, **result.test_metrics}), flush=True)
"""
SLICE = ["model=cnn_small", "dataset.max_examples_per_split=5000", "trainer.verbose=0", "tracking.log_model=false",
         "tracking.system_metrics=false"]


def _script(runs: list[list[str]]) -> list[str]:
    return [sys.executable, "-c", SCRIPT, json.dumps(runs)]


def test_two_replicas_train_as_well_as_one_and_resume(tmp_path):
    outputs = tmp_path / "outputs"
    base = [*SLICE, f"paths.output_dir={outputs}"]
    both = subprocess.run(_script([[*base, "trainer.epochs=2", f"trainer.distribution={mode}"]
                                   for mode in ("none", "mirrored")]),
                          cwd=REPO, env=user_environment(), capture_output=True, text=True, timeout=600)
    assert both.returncode == 0, both.stderr[-1500:]
    one, two = (json.loads(line) for line in both.stdout.splitlines()[-2:])
    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    params = {result["run_id"]: client.get_run(result["run_id"]).data.params for result in (one, two)}
    assert (params[one["run_id"]]["runtime.replicas"], params[two["run_id"]]["runtime.replicas"]) == ("1", "2")
    assert params[two["run_id"]]["runtime.device"] == "2 x CPU"
    assert params[two["run_id"]]["pipeline.batch_size"] == "256", "the global batch, as configured"
    assert one["test_accuracy"] > 0.85 and two["test_accuracy"] > 0.85
    assert abs(one["test_accuracy"] - two["test_accuracy"]) < 0.05
    assert [point.step for point in client.get_metric_history(two["run_id"], "val_accuracy")] == [1, 2]

    # Interrupted after its first epoch (SIGTERM, as a scheduler sends), then resumed: the same run, every epoch once.
    mirrored = [*base, "trainer.epochs=3", "trainer.distribution=mirrored"]
    process = subprocess.Popen(_script([mirrored]), cwd=REPO, env=user_environment(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    backups = outputs / "backups"
    wait_for(lambda: any(backups.rglob("training_metadata.json")) or process.poll() is not None, 300,
             "the first epoch's backup")
    assert process.poll() is None, "training ended before it could be interrupted"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0 and "KeyboardInterrupt: signal 15" in stderr, (process.returncode, stderr[-1500:])
    [killed] = client.search_runs([two_experiment := client.get_run(two["run_id"]).info.experiment_id],
                                  "attributes.status = 'KILLED'")
    resumed = subprocess.run(_script([[*mirrored, "trainer.resume=true"]]), cwd=REPO, env=user_environment(),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-1500:]
    run = client.get_run(json.loads(resumed.stdout.splitlines()[-1])["run_id"])
    assert run.info.run_id == killed.info.run_id, "continued in the same run"
    assert run.data.tags["resumed"] == "true" and run.info.status == "FINISHED"
    assert len(client.search_runs([two_experiment])) == 3
    assert [point.step for point in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1, 2, 3]
    assert run.data.params["runtime.replicas"] == "2"
