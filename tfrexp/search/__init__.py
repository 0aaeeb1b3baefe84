"""Hyperparameter search with Optuna: the space in Hydra's sweep syntax (space), the study every trial reaches
through its storage URL (study), and a trial's side of pruning (trial). The sweeper that drives a search is
hydra_plugins/tfrexp_sweepers/optuna_search.py, where Hydra looks for sweepers.

Nothing is imported here: the sweeper's driver imports no TensorFlow, and Optuna loads only when used.
"""
