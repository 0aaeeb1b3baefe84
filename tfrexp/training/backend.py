"""TensorFlow and Keras imported with the configured Keras backend, their C++ start-up lines held back.

Nothing here imports TensorFlow at module level: the entrypoints call `prepare_backend` once the config is
known to be good, and it must run before anything else imports Keras.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import tempfile
from typing import Any, Iterator

from tfrexp.config.schema import Backend, TrainerConfig
from tfrexp.errors import ConfigError
from tfrexp.training.devices import choose_job_gpus


def prepare_backend(trainer: TrainerConfig, hydra_config: Any = None) -> None:
    """Import TensorFlow and Keras with the configured Keras backend. TensorFlow's C++ start-up lines
    (`cuInit ... UNKNOWN ERROR` on a machine without a GPU, oneDNN and CUDA-stub notices) are kept out of the
    output unless trainer.backend_logs is true: TF_CPP_MIN_LOG_LEVEL=3 (a value of the user's own wins)
    silences what TensorFlow logs once running, and what its libraries print while loading, which that
    setting no longer reaches, is held back (and shown if the import fails). A job that is a worker of a
    sweep (`hydra_config`: the job's HydraConfig) first gets GPUs of its own (tfrexp.training.devices)."""
    choose_job_gpus(trainer, hydra_config)  # before TensorFlow loads: it takes the GPUs it sees then, for good
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if trainer.backend_logs else "3")
    loaded = sys.modules.get("keras")
    if loaded is not None:
        current = loaded.backend.backend()
        if current != trainer.backend.value:
            raise ConfigError(f"trainer.backend={trainer.backend.value!r}: Keras is already loaded with the "
                              f"{current} backend in this process; start a new one")
        return
    if trainer.backend is Backend.jax and importlib.util.find_spec("jax") is None:
        raise ConfigError("trainer.backend='jax': JAX is not installed (pip install 'tfrexp[jax]')")
    os.environ["KERAS_BACKEND"] = trainer.backend.value
    with contextlib.nullcontext() if trainer.backend_logs else _native_stderr_held():
        import keras  # noqa: F401
        import tensorflow  # noqa: F401


@contextlib.contextmanager
def _native_stderr_held() -> Iterator[None]:
    """File descriptor 2 into a temporary file for the block (C++ libraries write there, not to sys.stderr);
    what was written is shown after all if the block raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace"))
