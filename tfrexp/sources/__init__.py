"""Source data sets. `dataset.source.kind` names a module: one of this package (idx, tfds, image_folder) or
any importable module of the user's (`kind: my_project.my_source`). The module defines `Settings`, the
dataclass that types the rest of `dataset.source` and holds its defaults, and `Source`, built from the
dataset settings and those settings, which the records writer consumes (tfrexp.records.examples). So a new
kind is one new module and one dataset YAML.
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from tfrexp.config.loading import typed
from tfrexp.config.schema import DatasetConfig
from tfrexp.errors import ConfigError
from tfrexp.records.examples import ExampleSource

BUILT_IN = ("idx", "tfds", "image_folder")


def register_schemas() -> None:
    """The built-in kinds' settings as the config group `dataset/source`, so that a dataset YAML's defaults
    list (`- source: idx`) types its source node at compose time: every key can be overridden, a misspelt
    one is refused, and the defaults live in the kind's `Settings` alone."""
    store = ConfigStore.instance()
    for kind in BUILT_IN:
        store.store(group="dataset/source", name=kind, node=source_module(kind).Settings)


def build(dataset: DatasetConfig) -> ExampleSource:
    """The source `dataset.source` describes, its settings checked; reads no data."""
    node = dataset.source
    if dataclasses.is_dataclass(node):  # typed at compose time (a built-in kind): already checked
        return source_module(node.kind).Source(dataset, node)
    kind = node.get("kind") if isinstance(node, (dict, DictConfig)) else None
    module = source_module(kind)
    return module.Source(dataset, typed(module.Settings, node, "dataset.source"))


def source_module(kind: Any) -> ModuleType:
    if not isinstance(kind, str) or not kind:
        raise ConfigError(f"dataset.source.kind={kind!r}: must be one of {list(BUILT_IN)} or a module path")
    name = kind if "." in kind else f"{__name__}.{kind}"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name is not None and name.startswith(error.name):  # the module itself, not one it imports
            raise ConfigError(f"dataset.source.kind={kind!r}: must be one of {list(BUILT_IN)} "
                              "or an importable module path") from None
        raise
    if not (hasattr(module, "Settings") and hasattr(module, "Source")):
        raise ConfigError(f"dataset.source.kind={kind!r}: {name} defines no `Settings` and `Source`")
    return module


