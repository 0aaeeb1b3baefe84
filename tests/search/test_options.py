"""Every sampler and pruner option of our Optuna sweeper composes with the shipped search and builds the Optuna
object it names, as the sweeper builds it."""

from __future__ import annotations

import optuna
import pytest
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from tfrexp import run_context
from tfrexp.search.space import search_space


@pytest.mark.parametrize(("sampler", "expected"), [("tpe", optuna.samplers.TPESampler),
                                                   ("random", optuna.samplers.RandomSampler),
                                                   ("grid", optuna.samplers.GridSampler),
                                                   ("cmaes", optuna.samplers.CmaEsSampler)])
@pytest.mark.parametrize(("pruner", "pruner_class"), [("median", optuna.pruners.MedianPruner),
                                                      ("hyperband", optuna.pruners.HyperbandPruner),
                                                      ("successive_halving", optuna.pruners.SuccessiveHalvingPruner),
                                                      ("none", optuna.pruners.NopPruner)])
def test_each_sampler_and_pruner_builds(tmp_path, sampler, expected, pruner, pruner_class):
    overrides = ["hparams_search=mnist_optuna", f"hydra/sweeper/sampler={sampler}", f"hydra/sweeper/pruner={pruner}",
                 f"paths.output_dir={tmp_path}"]
    if sampler == "grid":  # the grid needs a finite space
        overrides += ["~hydra.sweeper.params",
                      "+hydra.sweeper.params={pipeline.batch_size:'choice(64, 128)',model.dropout:'choice(0.1, 0.2)'}"]
    sweeper = run_context.compose(*overrides, return_hydra_config=True).hydra.sweeper
    assert get_class(sweeper._target_).__name__ == "OptunaSearchSweeper" and sweeper.sampler.seed == 123
    pruner_config = OmegaConf.to_container(sweeper.pruner, resolve=True)
    assert isinstance(instantiate(pruner_config), pruner_class)
    if pruner == "hyperband":
        assert pruner_config["max_resource"] == 4, "trainer.epochs of the search"
    if sampler == "cmaes":  # built on first use, with the optional `cmaes` package
        assert get_class(sweeper.sampler._target_) is expected
        return
    space = search_space(OmegaConf.to_container(sweeper.params), [])
    extra = {"search_space": space.grid()} if sampler == "grid" else {}
    assert isinstance(instantiate(sweeper.sampler, **extra), expected)
