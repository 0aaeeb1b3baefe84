"""tfrexp: configuration-driven TensorFlow experiments (TFRecords, tf.data, Keras, Hydra, MLflow)."""

import time

__version__ = "0.1.0"

STARTED = time.perf_counter()  # when the package was first imported: the start of a `tfrexp` process
