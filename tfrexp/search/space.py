"""A search space in Hydra's sweep syntax, as Optuna distributions.

`hydra.sweeper.params` and the sweep overrides of the command line say what to search, in the words users
know from Hydra (`choice(64, 128)`, `a,b`, `range(1, 10, 2)`, `interval(0, 0.5)`, `int(interval(1, 9))`,
`tag(log, interval(1e-4, 1e-2))`), parsed by hydra-core's own override parser. Everything else is fixed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep

from tfrexp.errors import ConfigError, first_line


@dataclass(frozen=True)
class SearchSpace:
    distributions: dict[str, Any]  # key (as overridden: `trainer.learning_rate`, `model`) -> Optuna distribution
    fixed: list[str]  # overrides every trial gets as they are

    def overrides(self, params: dict[str, Any]) -> list[str]:
        """A trial's overrides: the fixed ones, then its drawn values."""
        return [*self.fixed, *(f"{key}={_override_value(value)}" for key, value in params.items())]

    def grid(self) -> dict[str, list]:
        """Every value of every key, for Optuna's GridSampler: choices only (or ranges, which are finite)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        grid = {}
        for key, distribution in self.distributions.items():
            if isinstance(distribution, CategoricalDistribution):
                grid[key] = list(distribution.choices)
            elif isinstance(distribution, (IntDistribution, FloatDistribution)) and distribution.step is not None:
                count = round((distribution.high - distribution.low) / distribution.step) + 1
                grid[key] = [distribution.low + index * distribution.step for index in range(count)]
            else:
                raise ConfigError(f"hydra.sweeper.params.{key}: the grid sampler needs choice(...) or range(...), "
                                  "not an interval")
        return grid


def search_space(params: dict[str, str] | None, arguments: list[str]) -> SearchSpace:
    """The space of `hydra.sweeper.params` plus the command line's sweep overrides (which win), and the fixed
    overrides of the command line."""
    parser = OverridesParser.create()
    try:
        overrides = parser.parse_overrides([f"{key}={value}" for key, value in (params or {}).items()])
        overrides += parser.parse_overrides(arguments)
    except Exception as error:  # noqa: BLE001 -- Hydra's parser raises its own error types
        raise ConfigError(f"hydra.sweeper.params: {first_line(error)}") from None
    distributions: dict[str, Any] = {}
    fixed: list[str] = []
    for override in overrides:
        if override.is_sweep_override():
            distributions[override.get_key_element()] = _distribution(override)
        else:
            fixed.append(override.input_line)
    return SearchSpace(distributions, fixed)


def _distribution(override: Override) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    sweep, key = override.value(), override.get_key_element()
    log = "log" in sweep.tags
    if isinstance(sweep, ChoiceSweep):
        if log:
            raise ConfigError(f"{key}: tag(log, ...) applies to interval(...) and range(...), not to choice(...)")
        return CategoricalDistribution([_plain(value) for value in sweep.list])
    if isinstance(sweep, RangeSweep):
        start, stop, step = sweep.start, sweep.stop, sweep.step
        if step <= 0 or stop <= start:
            raise ConfigError(f"{key}={override.input_line.split('=', 1)[1]}: an empty range")
        last = start + step * math.floor((stop - start) / step - 1e-9)  # range() excludes its stop
        if all(isinstance(value, int) for value in (start, stop, step)):
            return IntDistribution(int(start), int(last), step=None if log else int(step), log=log)
        return FloatDistribution(float(start), round(float(last), 12), step=None if log else float(step), log=log)
    if isinstance(sweep, IntervalSweep):
        if sweep.end <= sweep.start:
            raise ConfigError(f"{key}: interval({sweep.start}, {sweep.end}) is empty")
        if isinstance(sweep.start, int) and isinstance(sweep.end, int):
            return IntDistribution(sweep.start, sweep.end, log=log)
        return FloatDistribution(float(sweep.start), float(sweep.end), log=log)
    raise ConfigError(f"{key}: {type(sweep).__name__} cannot be searched; use choice, range or interval")


def _plain(value: Any) -> Any:
    """Optuna keeps None, bool, int, float and str choices; anything else as Hydra would write it."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def _override_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return str(value)
