"""The config: typed schemas with the defaults (schema), and composing the shipped tree into them (loading)."""

from tfrexp.config.loading import CONF_DIR, register_schemas, to_settings, typed
from tfrexp.config.schema import (
    Backend,
    Cache,
    Compression,
    Config,
    DatasetConfig,
    Distribution,
    ImageEncoding,
    Parse,
    PathsConfig,
    PipelineConfig,
    Repeat,
    Toggle,
    TrackingConfig,
    TrainerConfig,
    WriterConfig,
    require,
)

__all__ = [
    "CONF_DIR", "Backend", "Cache", "Compression", "Config", "DatasetConfig", "Distribution", "ImageEncoding",
    "Parse", "PathsConfig", "PipelineConfig", "Repeat", "Toggle", "TrackingConfig", "TrainerConfig", "WriterConfig",
    "register_schemas", "require", "to_settings", "typed",
]
