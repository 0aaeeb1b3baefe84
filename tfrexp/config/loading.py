"""Where the shipped config tree is, the schema Hydra types it with, and turning a composed config into
typed settings (composing itself is tfrexp.run_context.compose, which also registers the source kinds' schemas).

Hydra checks keys and types against the schema at compose time; `to_settings` then builds the dataclasses,
whose `__post_init__` checks values. Nothing here imports TensorFlow, so a bad config costs well under a
second.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tfrexp.config.schema import Config
from tfrexp.errors import ConfigError

# Shipped inside the package, so `pip install tfrexp` works from any folder.
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")

# config.yaml adds ./conf to the search path for users' own options; most folders have none, which is fine.
# Set on import, not at start-up: a launcher's worker (joblib's) composes its job's config again, having
# imported this module only to unpickle the job.
warnings.filterwarnings("ignore", message=r"provider=hydra\.searchpath in main, path=conf is not available")


def _subdir(parent: Optional[str], name: str) -> Optional[str]:
    """`${subdir:${paths.data_dir},mnist}`: parent/name, or null when the parent is not configured."""
    return None if parent is None else str(Path(parent) / name)


def register_schemas() -> None:
    """Make the schema available to config.yaml's defaults list as `tfrexp_schema`, and our resolvers."""
    ConfigStore.instance().store(name="tfrexp_schema", node=Config)
    if not OmegaConf.has_resolver("subdir"):
        OmegaConf.register_new_resolver("subdir", _subdir)
    if not OmegaConf.has_resolver("optuna_direction"):
        # `${optuna_direction:${trainer.objective_direction}}`: Optuna's words for max and min
        OmegaConf.register_new_resolver("optuna_direction", lambda direction: {"max": "maximize",
                                                                               "min": "minimize"}[direction])


def to_settings(composed: DictConfig) -> Config:
    """Resolve the composed config and build the typed settings; raises ConfigError on a bad value."""
    _reject_unknown_keys(composed, Config, "")
    try:
        settings = OmegaConf.to_object(composed)
    except OmegaConfBaseException as error:
        # Interpolation and conversion problems surface here; carry the key OmegaConf names.
        cause = error.__cause__ if isinstance(error.__cause__, ConfigError) else None
        if cause is not None:
            raise cause from None
        raise ConfigError(f"{error.full_key or '<config>'}: {error.msg}") from None
    if not isinstance(settings, Config):
        raise ConfigError("the config does not follow tfrexp's schema (is `tfrexp_schema` first in its defaults?)")
    return settings


def typed(schema: type, values: Any, prefix: str) -> Any:
    """`values` (a dict or DictConfig) merged onto a dataclass schema and built: unknown keys, wrong types and
    bad values raise a ConfigError naming `prefix.key`."""
    node = values if isinstance(values, DictConfig) else OmegaConf.create(values)
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node))
    except OmegaConfBaseException as error:
        if isinstance(error.__cause__, ConfigError):
            raise error.__cause__ from None
        key = f"{prefix}.{error.full_key}" if getattr(error, "full_key", None) else prefix
        raise ConfigError(f"{key}: {error.msg}") from None


def _reject_unknown_keys(node: DictConfig, schema: type, prefix: str) -> None:
    """Hydra's `+key=value` can force a key into a typed node; refuse any key the schema does not name."""
    names = {spec.name for spec in dataclasses.fields(schema)}
    for key in node.keys():
        if key not in names:
            raise ConfigError(f"{prefix}{key}: unknown key (known: {', '.join(sorted(names))})")
        child = node._get_node(key)
        child_schema = OmegaConf.get_type(child) if isinstance(child, DictConfig) else None
        if child_schema is not None and dataclasses.is_dataclass(child_schema):
            _reject_unknown_keys(child, child_schema, f"{prefix}{key}.")
