"""The only code that speaks MLflow: the store (store), a run's life and what it logs (run, metrics), sweeps as
parent and child runs (sweep, sweep_summary), run names (names), the run's pictures (reports) and the shared
local server (server).

Nothing is imported here: Hydra imports the sweep callback for every run, and MLflow loads only when used.
"""
