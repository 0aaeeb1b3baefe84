"""Training: TensorFlow's start-up with the chosen Keras backend (backend, no TensorFlow imported before it
runs), the GPUs a sweep's job trains on (devices), the devices, compile, fit and evaluate (fit), and the callbacks
fit runs with (callbacks)."""
