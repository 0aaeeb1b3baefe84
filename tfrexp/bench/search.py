"""The same Optuna search with and without pruning, in one bench run: 16 trials of up to 6 epochs on an MNIST
slice, TPE with a fixed seed. Each search is the whole `tfrexp -m hparams_search=mnist_optuna` command on a
fresh study; what it cost is its wall time and the epochs its trials trained (read back from the study), and
what it found is the best validation accuracy of a trial that trained all its epochs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tfrexp.bench.measure import Bench, Row
from tfrexp.records.writer import ensure_records

TRIALS, EPOCHS = 16, 6
SEARCH = ["-m", "hparams_search=mnist_optuna", f"hydra.sweeper.n_trials={TRIALS}", f"trainer.epochs={EPOCHS}",
          "model=cnn_small", "dataset.max_examples_per_split=20000", "trainer.verbose=0", "tracking.log_model=false",
          "tracking.system_metrics=false"]
TARGET = "pruned: >= 2x fewer epochs, >= 1.6x less wall time, best within 0.3 points"


def bench_search(bench: Bench) -> list[Row]:
    settings, source = bench.settings(*SEARCH[4:])
    ensure_records(source, settings.writer, settings.paths.records_dir)  # both searches reuse them
    full = _search(bench, "none")
    pruned = _search(bench, None)  # the search's own pruner
    fewer, faster = full["epochs"] / pruned["epochs"], full["wall"] / pruned["wall"]
    gap = 100 * (pruned["best"] - full["best"])
    return [
        Row(f"search of {TRIALS} trials x {EPOCHS} epochs: unpruned", "s", full["wall"],
            note=f"{full['epochs']} epochs trained; best val_accuracy {full['best']:.4f}"),
        Row(f"search of {TRIALS} trials x {EPOCHS} epochs: pruned (successive halving, the default)", "s",
            pruned["wall"],
            baseline=full["wall"], target=TARGET,
            note=f"{pruned['epochs']} epochs trained ({fewer:.1f}x fewer) in {faster:.1f}x less time, {pruned['pruned']} "
                 f"trials pruned; best val_accuracy {pruned['best']:.4f} ({gap:+.2f} points against the unpruned)"),
    ]


def _search(bench: Bench, pruner: str | None) -> dict:
    import optuna

    name = pruner or "default"
    database = Path(bench.work_dir) / f"optuna-bench-{name}.db"
    database.unlink(missing_ok=True)  # a fresh study each time
    storage = f"sqlite:///{database}"
    started = time.perf_counter()
    chosen = [f"hydra/sweeper/pruner={pruner}"] if pruner else []
    result = subprocess.run([sys.executable, "-m", "tfrexp", *SEARCH, *chosen,
                             f"hydra.sweeper.storage={storage}", f"tracking.experiment=bench-search-{name}",
                             *bench.overrides()], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"the search with pruner={name} failed (exit {result.returncode}):\n"
                           f"{result.stderr[-3000:]}")
    trials = optuna.load_study(study_name="mnist_optuna", storage=storage).trials
    complete = [trial.value for trial in trials if trial.state == optuna.trial.TrialState.COMPLETE]
    return {"wall": wall, "epochs": sum(len(trial.intermediate_values) for trial in trials),
            "pruned": sum(trial.state == optuna.trial.TrialState.PRUNED for trial in trials), "best": max(complete)}
