"""Training: TensorFlow's start-up with the chosen Keras backend (backend, no TensorFlow imported before it
runs), the devices, compile, fit and evaluate (fit), and the callbacks fit runs with (callbacks)."""
