"""A search space in Hydra's sweep syntax, parsed by hydra-core's parser into Optuna distributions."""

from __future__ import annotations

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from tfrexp.errors import ConfigError
from tfrexp.search.space import search_space


def test_every_sweep_form_becomes_its_distribution_and_the_rest_is_fixed():
    space = search_space(
        {"trainer.learning_rate": "tag(log, interval(0.0003, 0.01))", "pipeline.batch_size": "choice(64, 128, 256)",
         "model.dropout": "interval(0.0, 0.5)", "trainer.epochs": "range(2, 9, 3)",
         "model.filters": "int(interval(4, 32))"},
        ["model=choice(cnn, cnn_small)", "trainer.seed=1,2", "dataset.max_examples_per_split=300",
         "pipeline.batch_size=choice(32, 64)"])
    assert space.distributions == {
        "trainer.learning_rate": FloatDistribution(0.0003, 0.01, log=True),
        "pipeline.batch_size": CategoricalDistribution([32, 64]),  # the command line wins
        "model.dropout": FloatDistribution(0.0, 0.5),
        "trainer.epochs": IntDistribution(2, 8, step=3),  # range() leaves out its stop, as Python's does
        "model.filters": IntDistribution(4, 32),
        "model": CategoricalDistribution(["cnn", "cnn_small"]),
        "trainer.seed": CategoricalDistribution([1, 2]),
    }
    assert space.fixed == ["dataset.max_examples_per_split=300"]
    assert space.overrides({"model.dropout": 0.25, "model": "cnn", "flag": True}) == [
        "dataset.max_examples_per_split=300", "model.dropout=0.25", "model=cnn", "flag=true"]


def test_the_grid_sampler_gets_every_value_and_refuses_an_interval():
    space = search_space({"a": "choice(1, 2)", "b": "range(0.1, 0.4, 0.1)"}, [])
    grid = space.grid()
    assert grid["a"] == [1, 2] and [round(value, 6) for value in grid["b"]] == [0.1, 0.2, 0.3]
    with pytest.raises(ConfigError, match=r"hydra.sweeper.params.c: the grid sampler needs choice"):
        search_space({"c": "interval(0, 1)"}, []).grid()


@pytest.mark.parametrize(("params", "message"), [
    ({"a": "interval(1.0"}, r"hydra.sweeper.params: "),
    ({"a": "interval(0.5, 0.1)"}, r"a: interval\(0.5, 0.1\) is empty"),
    ({"a": "tag(log, choice(1, 2))"}, r"a: tag\(log, ...\) applies to interval"),
])
def test_a_bad_space_is_one_line_naming_the_key(params, message):
    with pytest.raises(ConfigError, match=message) as error:
        search_space(params, [])
    assert "\n" not in str(error.value)
