"""`tfrexp-bench`: our writer, input pipelines, training and start-up against the obvious way of doing the
same work, on this machine, in one run. One module per case; `measure` holds what they share, `walkthrough`
the baselines, `cli` the command and its report; `synthetic` makes the generated cats-vs-dogs folder that the
bench and the tests use."""

import os

# What TensorFlow logs once running (CUDA probing) stays out of the report; the lines its libraries print
# while loading still show here (TensorFlow 2.21 ignores this setting for those, tensorflow#100442).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
