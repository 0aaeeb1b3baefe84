"""tfrexp: configuration-driven TensorFlow experiments (TFRecords, tf.data, Keras, Hydra, MLflow).

`tfrexp.run`, `tfrexp.compose` and `tfrexp.load_split` are the Python API (tfrexp/api.py); they are
imported on first use, so that `import tfrexp` stays light.
"""

from importlib.metadata import version

__version__ = version("tfrexp")  # pyproject.toml's, as installed

_API = ("run", "compose", "load_split")


def __getattr__(name: str):
    if name in _API:
        from tfrexp import api

        return getattr(api, name)
    raise AttributeError(f"module 'tfrexp' has no attribute {name!r}")
