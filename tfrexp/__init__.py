"""tfrexp: configuration-driven TensorFlow experiments (TFRecords, tf.data, Keras, Hydra, MLflow)."""

__version__ = "0.1.0"
